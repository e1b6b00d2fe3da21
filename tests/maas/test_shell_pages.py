"""The shell's own answers: styled 404 and 500 pages with a way back, the /api/ root, the favicon (issue 16, item 11),
and quickstart's quiet logs."""

import pytest
from django.test import Client, RequestFactory
from django.utils import translation

from core.http import server_error
from maas.management.commands.quickstart import Command as Quickstart


@pytest.fixture
def production(settings):
    """Error pages as production shows them (DEBUG on shows Django's technical pages instead)."""
    settings.DEBUG = False
    return settings


def _styled_with_a_way_home(html: str) -> None:
    assert "/static/css/app.css" in html and 'class="topbar"' in html
    assert 'href="/"' in html and "Back to the console" in html
    assert "/static/favicon.svg" in html


def test_a_missing_page_is_the_consoles_404_with_a_way_back(production, alice_client):
    response = alice_client.get("/no/such/page/")

    assert response.status_code == 404
    html = response.content.decode()
    _styled_with_a_way_home(html)
    assert "Page not found" in html and "alice@example.com" in html  # the console's own header, logged in


def test_an_api_path_still_answers_404_in_json(production, client):
    response = client.get("/api/no/such/thing/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.urls("tests.maas.error_urls")
def test_a_failing_console_page_is_the_styled_500(production, db):
    response = Client(raise_request_exception=False).get("/fail/")

    assert response.status_code == 500
    _styled_with_a_way_home(response.content.decode())


def test_the_500_page_needs_neither_the_database_nor_a_request_context(production, django_db_blocker):
    request = RequestFactory().get("/services/")  # no session, no user, no org: nothing a context processor reads
    with django_db_blocker.block(), translation.override("zh-hans"):
        response = server_error(request)

    assert response.status_code == 500
    html = response.content.decode()
    assert "/static/css/app.css" in html and 'href="/"' in html and 'lang="zh-hans"' in html


def test_the_api_root_lists_its_sections_and_documents(client, db):
    response = client.get("/api/")

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["sections"] == {
        "catalog_models": "http://testserver/api/catalog/models",
        "services": "http://testserver/api/services",
        "billing_ledger": "http://testserver/api/billing/ledger",
        "billing_topups": "http://testserver/api/billing/topups",
    }
    assert body["schema"] == "http://testserver/api/schema/" and body["docs"] == "http://testserver/api/docs/"
    assert body["v1"] == "http://testserver/v1/" and body["v1_schema"] == "http://testserver/api/schema/v1/"
    for url in [*body["sections"].values(), body["schema"], body["docs"]]:
        assert client.get(url).status_code in (200, 401, 403), url  # each one is a route, not a 404


def test_favicon_is_served_and_linked(client, alice_client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(response.streaming_content)
    assert '<link rel="icon" href="/static/favicon.svg"' in alice_client.get("/keys/").content.decode()
    assert client.get("/static/favicon.svg").status_code == 200


def _levels(commands: list[list[str]]) -> dict[str, str]:
    uvicorn, worker, beat, _ingester, autoscaler = commands
    assert autoscaler[-2:] == ["manage.py", "autoscale"]  # like the ingester, it reads LOG_LEVEL
    return {
        "uvicorn": uvicorn[uvicorn.index("--log-level") + 1],
        "worker": worker[worker.index("-l") + 1],
        "beat": beat[beat.index("-l") + 1],
    }


def test_quickstart_runs_its_processes_quietly_by_default(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    command = Quickstart()

    assert _levels(command.process_commands("127.0.0.1", 8000, verbose=False)) == {
        "uvicorn": "warning",
        "worker": "WARNING",
        "beat": "WARNING",
    }
    assert command.process_env("127.0.0.1", 8000, verbose=False)["LOG_LEVEL"] == "WARNING"  # the ingester's too


def test_quickstart_verbose_logs_info(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    command = Quickstart()

    assert set(_levels(command.process_commands("127.0.0.1", 8000, verbose=True)).values()) == {"info", "INFO"}
    assert command.process_env("127.0.0.1", 8000, verbose=True)["LOG_LEVEL"] == "INFO"
    parser = command.create_parser("manage.py", "quickstart")
    assert parser.parse_args(["--verbose"]).verbose and not parser.parse_args([]).verbose


def test_an_explicit_log_level_wins(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert _levels(Quickstart().process_commands("127.0.0.1", 8000, verbose=False))["worker"] == "DEBUG"
