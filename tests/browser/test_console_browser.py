"""Console pages in a real browser under the Content-Security-Policy: charts render, console.js behaviours work,
and the watch every browser test relies on does see a refusal."""

import pytest
from django.test import Client

from catalog.models import CatalogModel
from tenancy.models import Membership
from tests.billing.conftest import make_usage
from tests.browser.conftest import watch_csp

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _sign_in(page, url: str, user) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": url}])


def test_the_watch_sees_inline_script_and_style_refused(browser, live_server):
    context = browser.new_context()
    refused = watch_csp(context)
    page = context.new_page()
    response = page.goto(f"{live_server.url}/accounts/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "window.ranInline = true";
          document.head.appendChild(script);
          document.body.setAttribute("style", "background: red");
        }"""
    )
    for _ in range(50):  # Chromium logs refusals asynchronously
        if len(refused) >= 2:
            break
        page.wait_for_timeout(50)
    assert page.evaluate("() => window.ranInline") is None
    context.close()
    assert any("script" in text for text in refused) and any("style" in text for text in refused), refused


def test_usage_and_billing_charts_render(page, live_server, alice, org, catalog):
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    for i in range(3):
        make_usage(org, model, prompt=100 * (i + 1), latency_ms=100 + 10 * i, ttft_ms=20 + i)
    _sign_in(page, live_server.url, alice)

    response = page.goto(f"{live_server.url}/billing/usage/")
    assert "style-src 'self'" in response.headers["content-security-policy"]
    charts = page.locator("svg.chart")
    assert charts.count() == 4
    assert charts.first.bounding_box()["width"] > 300
    swatch = page.locator(".legend-item .legend-swatch").first
    assert swatch.is_visible() and swatch.bounding_box()["width"] == 10

    page.goto(f"{live_server.url}/billing/")
    assert page.locator("svg.chart").is_visible()
    assert page.locator("svg.chart rect").count() >= 1


def test_usage_page_names_every_series_and_labels_today(page, live_server, alice, org, catalog):
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    make_usage(org, model, prompt=100, latency_ms=120, ttft_ms=30)
    make_usage(org, None, model_id="", status="error", public=False, prompt=0, completion=0)
    make_usage(org, None, model_id="public/gtp-4o", status="error", public=False, prompt=0, completion=0)
    _sign_in(page, live_server.url, alice)

    page.goto(f"{live_server.url}/billing/usage/")
    legend = page.locator(".legend").first.locator(".legend-item")
    names = legend.all_inner_texts()
    assert len(names) == 3 and all(name.strip() for name in names), names
    assert "(no model: refused before routing)" in names and "(unknown model ids)" in names
    swatches = legend.locator("rect").evaluate_all("rs => rs.map(r => r.getAttribute('fill'))")
    assert len(set(swatches)) == 3
    # Today's point is named, inside its chart, and the axis text is drawn at a readable size (not scaled down).
    chart = page.locator("svg.chart").first
    today = chart.locator("text.tick-current")
    assert today.text_content() == "today" and today.is_visible()
    box, frame = today.bounding_box(), chart.bounding_box()
    assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
    heights = page.locator(".chart-box text").evaluate_all("ts => ts.map(t => t.getBoundingClientRect().height)")
    assert heights and min(heights) >= 12, heights
    options = page.locator("select[name=model] option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["", "public/qwen2.5-7b-instruct"]

    page.goto(f"{live_server.url}/billing/")
    assert page.locator("svg.chart text.tick-current").text_content() == "today"
    assert page.locator("svg.chart rect.bar-current").count() == 1


def test_confirm_and_autosubmit_come_from_console_js(page, live_server, alice, bob, org):
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/org/members/")
    bob_row = page.locator("tr", has_text=bob.email)

    questions: list[str] = []

    def answer(dialog, accept: bool) -> None:
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    bob_row.get_by_role("button", name="Remove").click()
    assert questions == ["Remove this member?"]
    assert Membership.objects.filter(org=org, user=bob).exists()

    role = bob_row.locator("select[name=role]")
    current = role.input_value()
    other = next(v for v in role.locator("option").evaluate_all("os => os.map(o => o.value)") if v != current)
    with page.expect_navigation():
        role.select_option(other)
    assert Membership.objects.get(org=org, user=bob).role == other

    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    with page.expect_navigation():
        page.locator("tr", has_text=bob.email).get_by_role("button", name="Remove").click()
    assert not Membership.objects.filter(org=org, user=bob).exists()


def test_the_demo_login_asks_for_the_e_mail_and_remembers_the_chosen_org(page, live_server, catalog):
    """The README's demo login lands in the demo organization; the one chosen later is where the next log-in lands."""
    from django.core.management import call_command

    from maas.management.commands.seed_demo import DEMO_EMAIL, DEMO_PASSWORD
    from tenancy.models import Organization

    call_command("seed_demo", verbosity=0)
    demo = Organization.objects.get(namespace="demo")
    personal = Membership.objects.get(user__username=DEMO_EMAIL, org__personal=True).org

    def log_in() -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("E-mail").fill(DEMO_EMAIL)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/models/")

    log_in()
    assert page.locator("#org-select").input_value() == str(demo.pk)
    with page.expect_navigation():
        page.locator("#org-select").select_option(str(personal.pk))  # console.js submits the switcher
    assert page.locator("#org-select").input_value() == str(personal.pk)
    page.locator(".usermenu summary").click()
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    log_in()
    assert page.locator("#org-select").input_value() == str(personal.pk)


def test_instance_hours_chart_renders_with_its_table(page, live_server, alice, org, catalog, region):
    from datetime import timedelta

    from django.utils import timezone

    from tests.billing.conftest import make_service, meter

    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    for name, instances in (("chat", 2), ("embed", 1)):
        service = make_service(org, model, region, name=name)
        meter(service, timezone.now() - timedelta(days=1, hours=3), instances)
    _sign_in(page, live_server.url, alice)

    page.goto(f"{live_server.url}/billing/")
    panel = page.locator("#instance-hours")
    chart = panel.locator("svg.chart")
    assert chart.is_visible() and chart.bounding_box()["width"] > 300
    bars = chart.locator("rect.bar")
    assert bars.count() >= 4  # yesterday and today, one segment per service each
    heights = bars.evaluate_all("rs => rs.map(r => r.getBoundingClientRect().height)")
    assert min(heights) > 0, heights
    assert panel.locator(".legend-item").all_inner_texts() == ["chat", "embed"]
    table = panel.locator("#instance-hours-table")
    assert not table.is_visible()  # the table is the fallback, folded away
    panel.locator("summary").click()
    assert table.is_visible() and table.locator("tbody tr").count() == 30
