"""The console is self-contained: logged in, its main pages (and the API reference) ask no host but the platform's
own for anything, so a platform with no way out of its network still works (issue 16, item 9)."""

from urllib.parse import urlsplit

import pytest
from django.test import Client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MODEL = "qwen2.5-7b-instruct"
PAGES = [
    "/models/",
    f"/models/{MODEL}/",
    "/services/",
    f"/services/new/{MODEL}/",
    "/playground/",
    "/keys/",
    "/billing/",
    "/billing/usage/",
    "/org/members/",
    "/api/docs/",
]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def _outside(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in {"data", "blob", "about"} and parts.hostname not in LOCAL_HOSTS


def test_the_main_pages_request_nothing_from_another_host(page, live_server, alice, org, catalog, region):
    client = Client()
    client.force_login(alice)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    requested: list[str] = []
    page.context.on("request", lambda request: requested.append(request.url))
    # Whatever goes out is refused at once, as it would be on a platform with no way out: no test waits on a CDN.
    page.context.route(lambda url: _outside(url), lambda route: route.abort())

    for path in PAGES:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")

    assert requested and [url for url in requested if _outside(url)] == []


def test_the_api_reference_renders_from_the_platforms_own_files(page, live_server):
    response = page.goto(f"{live_server.url}/api/docs/")

    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy + ";"  # Redoc's bundle is a static file here: no script from elsewhere
    assert "/static/drf_spectacular_sidecar/redoc/" in page.content()
    # Redoc fetched the schema and drew it (a blank page before: its script came from a CDN).
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="MaaS management API").first).to_be_visible()
    expect(page.get_by_text("/api/services/").first).to_be_visible()
