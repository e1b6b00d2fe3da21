"""End to end in headless Chromium: log in, pick a model, send a prompt and watch the answer stream in."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client

from tests.factories import ReplicaFactory
from tests.playground.conftest import PUBLIC_SLUG, make_service
from tests.support.servers import run_asgi

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def live_asgi(transactional_db):
    """uvicorn serving maas.asgi:application (HTTP and WebSockets) on the test database."""
    with run_asgi(env={"GATEWAY_REDIS_PREFIX": settings.GATEWAY_REDIS_PREFIX}) as url:
        yield url


@pytest.fixture
def served_public_model(transactional_db, catalog, public_org, region):
    from simulator import run_simulator

    service = make_service(org=public_org, slug=PUBLIC_SLUG, name="qwen-small", region=region)
    with run_simulator(served_model_names=("public/qwen-small",), ttft_ms=20, itl_ms=15) as base_url:
        ReplicaFactory(service=service, name="qwen-small-0", base_url=base_url)
        yield service


def test_prompt_streams_answer_with_metrics(page, live_asgi, alice, org, served_public_model):
    from billing.services import ledger_adjust

    ledger_adjust(org=org, amount=Decimal("50"), reason="test credit", actor=alice)
    client = Client()
    client.force_login(alice)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_asgi}])

    page.goto(f"{live_asgi}/playground/?model=public/{PUBLIC_SLUG}")
    assert page.locator("#pg-model").input_value() == f"public/{PUBLIC_SLUG}"
    page.wait_for_selector("#pg-status:has-text('Ready')")
    page.fill("#pg-input", "Write two sentences about <b>TCP</b>.")
    page.click("#pg-send")

    # Tokens arrive while the answer is still being generated (the streaming cursor is on), then it completes.
    streaming = page.locator(".pg-answer .pg-body.pg-streaming")
    streaming.wait_for()
    page.wait_for_function(
        "() => { const b = document.querySelector('.pg-answer .pg-body.pg-streaming');"
        " return b && b.textContent.trim().split(/\\s+/).length >= 3; }"
    )
    page.locator("#pg-stop").is_enabled()
    page.wait_for_selector(".pg-answer .pg-stats", timeout=20_000)
    assert page.locator(".pg-answer .pg-body.md").inner_text().strip()
    stats = page.locator(".pg-answer .pg-stats").inner_text()
    assert "tok/s" in stats and "ms" in stats and "¥" in stats
    assert page.locator(".pg-prompt .pg-text").inner_text() == "Write two sentences about <b>TCP</b>."

    # The conversation is saved, listed and reachable by its own URL.
    page.wait_for_selector("#pg-conversations .pg-conv")
    assert "/playground/c/" in page.url
    page.reload()
    assert page.locator(".pg-answer .pg-stats").count() == 1

    # "View code" shows the saved conversation as a /v1 request.
    page.wait_for_selector("#pg-status:has-text('Ready')")
    page.click("#pg-code-open")
    dialog = page.locator("#pg-code")
    dialog.locator(".pg-snippet:not([hidden]) code").wait_for()
    assert "/v1/chat/completions" in dialog.locator("[data-snippet=curl] code").inner_text()
    dialog.locator("[data-tab=python]").click()
    python = dialog.locator("[data-snippet=python] code")
    assert python.is_visible() and "from openai import OpenAI" in python.inner_text()
    assert "Write two sentences about <b>TCP</b>." in python.inner_text()
