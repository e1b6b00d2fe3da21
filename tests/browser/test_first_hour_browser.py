"""The first hour of a new user, end to end in headless Chromium, once in English and once in Chinese.

Sign up → a platform admin credits the new organization → deploy a model from the marketplace → scale it with the
price shown and confirmed → chat in the playground → create a key → call the API with the official ``openai`` SDK →
the billing pages show what was charged. One uvicorn server runs ``maas.asgi`` (console, ``/v1`` and the playground's
WebSocket) on the test database; the service's instances are real simulator processes started by the local driver.
What Celery beat would run every few seconds (reconcile passes, usage ingestion, charging, settling) the test runs
itself at the moments it waits for them.

The walk fails on any request to a host other than the platform's, on any 4xx/5xx answer the user did not ask for,
and, in Chinese, on any English text of the console's message catalogue left on a page. With ``MAAS_SCREENSHOTS=1``
it saves a screenshot of every page under ``docs/screenshots/<language>/``.
"""

from __future__ import annotations

import gettext
import os
import re
import time
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.utils import translation
from playwright.sync_api import expect

from billing.selectors import org_spendable_balance
from billing.services import service_settle, usage_charge_pending
from billing.texts import LEDGER
from catalog.models import CatalogModel
from deployments import reconcile
from deployments.drivers import local
from deployments.models import Replica, Service, ServiceStatus
from deployments.services import local_cluster_create, service_create
from metering.ingestion import ingest_all
from tenancy.models import Organization
from tests.browser.conftest import watch_csp
from tests.support.servers import REPO, run_asgi

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-pass-2026"
MODEL_SLUG = "qwen2-0.5b-instruct"
SCREENSHOTS = os.environ.get("MAAS_SCREENSHOTS") == "1"

# Text on a Chinese page that may stay as it is: product and model names, units, ids.
LATIN_ALLOWED = re.compile(r"^[\w\s./:·,;()\-+%¥$@#&*=<>|'\"\[\]{}!?~^`]*$")


def _english_catalogue() -> dict[str, str]:
    """The console's English messages whose Chinese translation differs (``{msgid: msgstr}``), singular forms."""
    path = REPO / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.mo"
    with open(path, "rb") as handle:
        catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
    messages = {}
    for key, chinese in catalog.items():
        msgid = key[0] if isinstance(key, tuple) else key
        if not msgid or "\x04" in msgid:  # the header, or a message with a context (its text is the part after)
            msgid = msgid.split("\x04", 1)[-1] if msgid else ""
        if msgid and chinese and chinese != msgid:
            messages[msgid] = chinese
    return messages


def _fragments(msgid: str) -> list[str]:
    """The literal parts of a message between its placeholders, each a run of at least two words."""
    parts = re.split(r"%\(\w+\)[sd]|%[sd]|\{\{.*?\}\}", msgid)
    return [p.strip(" .,:;") for p in parts if len(p.strip(" .,:;").split()) >= 2]


ENGLISH = _english_catalogue()
ENGLISH_FRAGMENTS = sorted({f for m in ENGLISH for f in _fragments(m)}, key=len, reverse=True)
ENGLISH_WHOLE = {m.strip() for m in ENGLISH if "%" not in m and len(m.strip()) >= 3}

VISIBLE_TEXTS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!el || el.closest("script, style, code, pre, .pg-answer, .pg-question, template")) continue;
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") continue;
    const text = node.textContent.replace(/\\s+/g, " ").trim();
    if (text) out.push(text);
  }
  for (const el of document.querySelectorAll("[placeholder], [title], [aria-label], input[type=submit]")) {
    for (const name of ["placeholder", "title", "aria-label", "value"]) {
      const v = name === "value" ? (el.type === "submit" ? el.value : "") : el.getAttribute(name);
      if (v && v.trim()) out.push(v.replace(/\\s+/g, " ").trim());
    }
  }
  out.push(document.title);
  return out;
}"""


class Walk:
    """One person's browser on the platform, with the watches the walk keeps on every page."""

    def __init__(self, browser, url: str, lang: str, who: str):
        self.url, self.lang, self.who = url, lang, who
        self.context = browser.new_context(
            locale="zh-CN" if lang == "zh-hans" else "en-US", viewport={"width": 1280, "height": 900}
        )
        self.refused_by_csp = watch_csp(self.context)
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.untranslated: dict[str, list[str]] = {}
        self.context.on("request", self._request)
        self.context.on("response", self._response)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.shots = 0

    def _request(self, request) -> None:
        host = urlsplit(request.url).hostname
        if request.url.startswith(("data:", "blob:", "about:")):
            return
        if host not in ("127.0.0.1", "localhost"):
            self.outside.append(request.url)

    def _response(self, response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")

    def goto(self, path: str) -> None:
        self.page.goto(self.url + path)

    def look(self, name: str) -> None:
        """What every page must hold to: in Chinese, no English text of the catalogue; a screenshot when asked."""
        self.page.wait_for_load_state("networkidle")
        if self.lang == "zh-hans":
            found = untranslated(self.page.evaluate(VISIBLE_TEXTS))
            if found:
                self.untranslated[f"{name} ({self.page.url})"] = found
        if SCREENSHOTS:
            folder = REPO / "docs" / "screenshots" / self.lang
            folder.mkdir(parents=True, exist_ok=True)
            self.shots += 1
            self.page.screenshot(path=str(folder / f"{self.who}-{self.shots:02d}-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()

    def problems(self) -> dict[str, object]:
        found = {
            "outside requests": self.outside,
            "error answers": self.failed,
            "untranslated": self.untranslated,
            "refused by the CSP": self.refused_by_csp,
        }
        return {k: v for k, v in found.items() if v}


def untranslated(texts: list[str]) -> list[str]:
    found = []
    for text in texts:
        if text in ENGLISH_WHOLE:
            found.append(text)
            continue
        if LATIN_ALLOWED.match(text) and len(text.split()) < 2:
            continue
        for fragment in ENGLISH_FRAGMENTS:
            if fragment in text:
                found.append(f"{fragment!r} in {text!r}")
                break
    return found


def t(lang: str, english: str) -> str:
    """The text the user reads for ``english`` in ``lang`` (the catalogue's translation in Chinese)."""
    with translation.override(lang):
        return translation.gettext(english)


def token_usage(lang: str) -> str:
    """How a ledger line of per-token charges starts in ``lang``."""
    with translation.override(lang):
        return str(LEDGER.render("token_usage", {"n": 1}, "")).split("1")[0].strip()


def converge(service_id, *, ready: int, timeout: float = 30.0) -> Service:
    """Reconcile passes (what beat runs every few seconds) until ``ready`` instances answer."""
    deadline = time.monotonic() + timeout
    while True:
        reconcile.reconcile_service(service_id)
        service = Service.objects.get(pk=service_id)
        if service.status == ServiceStatus.RUNNING and service.ready_instances == ready:
            return service
        if time.monotonic() > deadline:
            raise AssertionError(f"{service.status} with {service.ready_instances} ready: {service.status_message}")
        time.sleep(0.3)


@pytest.fixture
def platform(transactional_db, catalog, region, public_org, django_user_model):
    local_cluster_create(name="local", region=region)
    model = CatalogModel.objects.prefetch_related("variants").get(slug=MODEL_SLUG)
    public = service_create(
        org=public_org, actor=None, catalog_model=model, region=region, name=MODEL_SLUG.replace(".", "-")
    )
    converge(public.pk, ready=1)  # the platform's public model, paid per token
    admin = django_user_model.objects.create_superuser(
        username="admin@example.com", email="admin@example.com", password=PASSWORD
    )
    with run_asgi(env={"GATEWAY_REDIS_PREFIX": settings.GATEWAY_REDIS_PREFIX}) as url:
        yield url, admin
    for service in Service.objects.all():
        local.stop_all(service)


@pytest.mark.parametrize("lang", ["en", "zh-hans"])
def test_the_first_hour(browser, platform, lang):
    url, _admin = platform
    user = Walk(browser, url, lang, "user")
    staff = Walk(browser, url, lang, "admin")
    try:
        _walk(user, staff, lang)
    finally:
        problems = {"user": user.problems(), "admin": staff.problems()}
        user.close()
        staff.close()
    assert problems == {"user": {}, "admin": {}}


def _walk(user: Walk, staff: Walk, lang: str) -> None:
    page, url = user.page, user.url
    email = f"new-{lang}@example.com"

    # Sign up.
    user.goto("/accounts/signup/")
    user.look("signup")
    page.fill("input[name=name]", "Lin")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{url}/models/")
    expect(page.locator(".messages")).to_contain_text(t(lang, "Welcome! Your personal organization is ready."))
    user.look("marketplace")
    org = Organization.objects.get(memberships__user__email=email)
    assert org_spendable_balance(org.pk) == 0

    # A platform admin credits the new organization from the console.
    staff.goto("/accounts/login/")
    staff.page.fill("input[name=username]", "admin@example.com")
    staff.page.fill("input[name=password]", PASSWORD)
    staff.page.locator("main form button[type=submit]").click()
    staff.page.wait_for_url(f"{url}/models/")
    staff.goto(f"/billing/accounts/?q={org.namespace}")
    staff.look("balances")
    staff.page.locator("#org-accounts a.btn", has_text=t(lang, "Credit")).click()
    staff.page.wait_for_url(f"**/billing/accounts/{org.pk}/credit/")
    staff.look("credit")
    staff.page.fill("input[name=amount]", "500")
    staff.page.fill("input[name=reason]", "trial credit")
    staff.page.locator("main form button[type=submit]").click()
    staff.page.wait_for_url(f"{url}/billing/accounts/**")
    expect(staff.page.locator(".messages")).to_contain_text("500.00")
    staff.look("credited")
    assert org_spendable_balance(org.pk) == Decimal("500")

    # The marketplace: a model page, its deploy form with the price.
    user.goto("/models/")
    page.locator(f"a[href='/models/{MODEL_SLUG}/']").first.click()
    page.wait_for_url(f"{url}/models/{MODEL_SLUG}/")
    user.look("model")
    page.locator("a.btn-primary", has_text=t(lang, "Deploy")).first.click()
    page.wait_for_url(f"**/services/new/{MODEL_SLUG}/")
    hourly = page.locator("#price-total").inner_text()
    assert "¥" in hourly
    page.fill("input[name=name]", "first")
    user.look("deploy")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/services/[0-9a-f-]{36}/$"))
    service = Service.objects.get(org=org, name="first")
    assert (service.instances, service.billing_mode) == (1, "payg")

    service = converge(service.pk, ready=1)
    page.reload()
    expect(page.locator("#service-status")).to_contain_text(t(lang, "Running"))
    user.look("service")

    # Scale to 2: the new price is shown before anything changes, and asked for once more.
    page.fill("input[name=instances]", "2")
    preview = page.locator("#scale-confirm .scale-price")
    expect(preview).to_contain_text("¥")
    user.look("scale-preview")
    page.locator("#scale-confirm").locator("xpath=ancestor::form").locator("button[type=submit]").click()
    page.wait_for_url(f"**/services/{service.pk}/scale/")
    new_price = page.locator("#scale-new-price").inner_text()
    assert "¥" in new_price
    assert Service.objects.get(pk=service.pk).instances == 1
    assert t(lang, "Billing mode") in page.locator("main").inner_text()
    user.look("scale-confirm")
    page.locator("main form button[type=submit].btn-primary").click()
    page.wait_for_url(f"**/services/{service.pk}/")
    assert Service.objects.get(pk=service.pk).instances == 2
    service = converge(service.pk, ready=2)
    assert Replica.objects.filter(service=service, ready=True).count() == 2
    page.reload()
    user.look("scaled")

    # The playground streams an answer from the new service.
    model_id = f"{org.namespace}/first"
    user.goto(f"/playground/?model={model_id}")
    assert page.locator("#pg-model").input_value() == model_id
    page.fill("#pg-input", "Say hello in five words.")
    page.click("#pg-send")
    page.wait_for_selector(".pg-answer .pg-stats", timeout=30_000)
    assert page.locator(".pg-answer .pg-body").inner_text().strip()
    # A dedicated service is paid by the instance-hour: its tokens cost nothing more.
    assert t(lang, "included") in page.locator(".pg-answer .pg-stats").inner_text()
    user.look("playground")

    # A key, shown once, used with the official SDK.
    user.goto("/keys/")
    page.fill("#apikeys input[name=name]", "laptop")
    page.locator("#apikeys form button[type=submit]").click()
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("sk-")
    user.look("key")

    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=30)
    assert model_id in [m.id for m in client.models.list().data]
    answer = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hello"}], max_tokens=16
    )
    assert answer.choices[0].message.content and answer.usage.total_tokens > 0
    public = client.chat.completions.create(
        model=f"public/{MODEL_SLUG}", messages=[{"role": "user", "content": "Hello"}], max_tokens=16
    )
    assert public.usage.total_tokens > 0

    # What beat runs within minutes: ingest usage, charge it, settle the running instances' time.
    deadline = time.monotonic() + 10
    ingested = 0
    while ingested < 3 and time.monotonic() < deadline:  # the playground's answer and the two SDK calls
        ingested += ingest_all()
        time.sleep(0.2)
    usage_charge_pending()
    service_settle(service_id=service.pk)
    spent = Decimal("500") - org_spendable_balance(org.pk)
    assert spent > 0

    # Billing shows the charges: the balance went down by what the ledger charged.
    user.goto("/billing/")
    user.look("billing")
    balance = org_spendable_balance(org.pk)
    assert f"{balance:,.2f}" in page.locator("main").inner_text()
    user.goto("/billing/ledger/")
    ledger = page.locator("#ledger-table").inner_text()
    assert token_usage(lang) in ledger and t(lang, "Instance hours") in ledger
    user.look("ledger")
    user.goto("/billing/usage/")
    user.look("usage")
    assert model_id in page.locator("main").inner_text()


def test_the_walk_sees_english_left_on_a_chinese_page(browser, live_server):
    walk = Walk(browser, live_server.url, "zh-hans", "check")
    try:
        walk.goto("/accounts/login/")
        assert untranslated(walk.page.evaluate(VISIBLE_TEXTS)) == []
        walk.page.evaluate(
            """() => {
              const p = document.createElement("p");
              p.textContent = "Deploy anyway";
              document.querySelector("main").appendChild(p);
              const q = document.createElement("p");
              q.textContent = "Cluster gpu-a is cordoned: no new instances can be placed there.";
              document.querySelector("main").appendChild(q);
            }"""
        )
        found = untranslated(walk.page.evaluate(VISIBLE_TEXTS))
        assert found[0] == "Deploy anyway" and len(found) == 2, found
    finally:
        walk.close()
