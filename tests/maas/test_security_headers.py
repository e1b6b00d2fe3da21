"""Security headers: the console's CSP (and templates that need no inline script), TLS settings, check --deploy."""

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from billing.models import TopUp
from catalog.models import CatalogModel
from tests.billing.conftest import make_usage

ROOT = Path(__file__).resolve().parents[2]
# A <script> without src= runs inline, unless it is a JSON data block (json_script), which never runs.
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
# style-src 'self' refuses style attributes and <style> elements as well.
INLINE_STYLE = re.compile(r"\sstyle\s*=|<style\b", re.IGNORECASE)
INLINE = (INLINE_SCRIPT, INLINE_HANDLER, INLINE_STYLE)


def _csp(response) -> dict[str, list[str]]:
    policy = {}
    for part in response["Content-Security-Policy"].split(";"):
        name, *sources = part.split()
        policy[name] = sources
    return policy


def test_console_pages_carry_a_policy_without_inline_script(alice_client, catalog):
    for url in ["/models/", "/keys/", "/billing/", "/services/", "/accounts/login/"]:
        policy = _csp(alice_client.get(url))
        assert policy["script-src"] == ["'self'"], url
        assert policy["style-src"] == ["'self'"], url
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]


def test_api_answers_carry_the_policy_too(client, catalog):
    assert _csp(client.get("/api/catalog/models/"))["default-src"] == ["'self'"]


def test_no_template_has_inline_script_handlers_or_styles():
    templates = [p for p in ROOT.rglob("*.html") if ".venv" not in p.parts and "node_modules" not in p.parts]
    assert len(templates) > 20
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in templates
        for pattern in INLINE
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []


def test_rendered_pages_with_charts_have_nothing_inline(alice_client, org, catalog):
    """What Python renders (the SVG charts, json_script) obeys the policy as the templates do."""
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    for i in range(3):
        make_usage(org, model, prompt=100 * (i + 1), latency_ms=100 + 10 * i, ttft_ms=20 + i)
    pages = {url: alice_client.get(url).content.decode() for url in ["/billing/", "/billing/usage/", "/models/"]}
    assert pages["/billing/usage/"].count('class="chart"') == 4 and "legend-item" in pages["/billing/usage/"]
    offenders = [f"{url}: {m.group(0)}" for url, html in pages.items() for p in INLINE for m in p.finditer(html)]
    assert offenders == []


def test_the_card_page_allows_stripe_js_and_nothing_else_does(alice_client, org):
    topup = TopUp.objects.create(org=org, amount=Decimal("10"), currency="CNY", payment_intent_id="pi_csp")
    policy = _csp(alice_client.get(f"/billing/topup/{topup.pk}/"))
    assert "https://js.stripe.com" in policy["script-src"] and "https://js.stripe.com" in policy["frame-src"]
    assert "https://api.stripe.com" in policy["connect-src"]
    assert "https://js.stripe.com" not in _csp(alice_client.get("/billing/"))["script-src"]


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k" * 20 + "-production-secret-for-the-check-0123456789",
    "ENCRYPTION_KEYS": "T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js=",
    "ALLOWED_HOSTS": "maas.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}
PROBE = """
import django, sys
from django.conf import settings
from django.core.management import call_command
django.setup()
print(settings.SECURE_PROXY_SSL_HEADER, settings.SECURE_HSTS_SECONDS)
call_command("check", deploy=True, fail_level="WARNING")
"""


def _production(**overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "DJANGO_", "SECURE_", "DEBUG"))}
    env |= {"DJANGO_SETTINGS_MODULE": "maas.settings", **PRODUCTION, **overrides}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_settings():
    out = _production()
    assert out.returncode == 0, out.stderr
    assert "('HTTP_X_FORWARDED_PROTO', 'https') 31536000" in out.stdout
    assert "System check identified no issues" in out.stdout


@pytest.mark.slow
def test_check_deploy_names_what_a_tls_deployment_must_set():
    out = _production(SECURE_HSTS_SECONDS="0")
    assert out.returncode != 0 and "security.W004" in out.stderr


def test_a_malformed_proxy_header_name_fails_loudly():
    out = _production(SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO")
    assert out.returncode != 0 and "SECURE_PROXY_SSL_HEADER: expected an HTTP header name" in out.stderr


def test_the_api_reference_is_under_the_policy_widened_only_for_redoc(client, alice_client):
    """/api/docs/ was exempt from the policy (Redoc from a CDN); now its widening is Redoc's styles and worker alone."""
    response = client.get("/api/docs/")
    policy = _csp(response)
    assert policy["script-src"] == ["'self'"] and policy["img-src"] == ["'self'", "data:"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"] and policy["worker-src"] == ["blob:"]
    assert policy["connect-src"] == ["'self'"]
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in html and "https://" not in html

    console = _csp(alice_client.get("/keys/"))
    assert "worker-src" not in console and console["style-src"] == ["'self'"]
