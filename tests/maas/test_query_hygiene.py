"""Crafted query strings get a 400 (JSON under /api/), never a 500; /api/ errors are always JSON."""

import pytest
from django.test import Client

from billing.api import LedgerEntryViewSet

API_LISTS = ["/api/catalog/models/", "/api/services/", "/api/billing/ledger/", "/api/billing/topups/"]
HUGE = "26070965048418570240"
CRAFTED = [
    f"limit={HUGE}",
    f"offset={HUGE}",
    "limit=-1",
    "limit=x",
    "offset=-5",
    "q=a%00b",
    "a%00=1",
    "kind=a%00",
]
CONSOLE_PAGES = [
    "/models/",
    "/billing/ledger/",
    "/billing/usage/",
    "/billing/",
    "/billing/statements/",
    "/billing/subscriptions/",
    "/services/",
    "/keys/",
    "/org/members/",
    "/playground/",
    "/playground/conversations/",
    "/playground/code/",
]
CONSOLE_CRAFTED = ["q=a%00b", "page=" + HUGE, "kind=a%00", "days=" + HUGE, "model=a%00", "current=a%00", "sort=x"]


@pytest.fixture
def quiet_client(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


def _assert_json_400(response):
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert isinstance(response.json(), dict)


@pytest.mark.parametrize("url", API_LISTS)
@pytest.mark.parametrize("query", CRAFTED)
def test_crafted_query_on_an_api_list_is_a_json_400(quiet_client, catalog, url, query):
    _assert_json_400(quiet_client.get(f"{url}?{query}"))


@pytest.mark.parametrize(
    "url",
    [
        "/api/billing/ledger/?limit=26070965048418570240",
        "/api/catalog/models/?q=a%00b",
        "/api/billing/ledger/?kind=a%00",
        "/api/billing/ledger/?kind=nonsense",
        "/api/catalog/models/?size=huge",
        "/api/catalog/models/?q=" + "x" * 101,
        "/api/billing/ledger/?limit=1001",
    ],
)
def test_the_reported_urls_are_json_400s(quiet_client, catalog, url):
    response = quiet_client.get(url)
    _assert_json_400(response)


def test_valid_paging_and_filters_still_work(quiet_client, catalog):
    response = quiet_client.get("/api/catalog/models/?limit=2&offset=1&sort=name&q=a")
    assert response.status_code == 200
    assert len(response.json()["results"]) <= 2
    assert quiet_client.get("/api/billing/ledger/?kind=topup&limit=1000").status_code == 200


@pytest.mark.parametrize("url", CONSOLE_PAGES)
@pytest.mark.parametrize("query", CONSOLE_CRAFTED)
def test_crafted_query_on_a_console_page_is_never_a_500(quiet_client, catalog, url, query):
    response = quiet_client.get(f"{url}?{query}")
    assert response.status_code in (200, 400), (url, query, response.status_code)
    if response.status_code == 400:
        assert not response["Content-Type"].startswith("application/json")


def test_public_marketplace_refuses_a_nul_for_anonymous_visitors(catalog):
    response = Client(raise_request_exception=False).get("/models/?q=a%00b")
    assert response.status_code == 400


def test_an_unexpected_api_error_is_a_json_500(quiet_client, monkeypatch):
    def boom(self, queryset):
        raise RuntimeError("boom")

    monkeypatch.setattr(LedgerEntryViewSet, "queryset_hook", boom)
    response = quiet_client.get("/api/billing/ledger/")
    assert response.status_code == 500
    assert response.json() == {"detail": "A server error occurred.", "code": "server_error"}
