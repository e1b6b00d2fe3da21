"""Deploy and scale in a real browser: the live price follows the billing mode and the typed count, and Apply
asks for confirmation with the price before anything changes."""

import pytest
from playwright.sync_api import expect

from catalog.models import CatalogModel
from deployments.models import Service
from deployments.services import local_cluster_create, service_create
from tests.browser.test_console_browser import _sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(region):
    return local_cluster_create(name="local", region=region)


def test_the_deploy_forms_price_shows_the_month_for_a_subscription(page, live_server, alice, org, catalog, cluster):
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/services/new/qwen2.5-7b-instruct/")
    total = page.locator("#price-total")
    assert total.inner_text() == "¥3.52 / hour"

    page.get_by_label("Monthly subscription").check()
    expect(total).to_have_text("¥1,774.08 / month")  # 3.52 × 720 × 0.7
    expect(page.locator("#price-due-now")).to_contain_text("¥1,774.08")

    page.get_by_role("spinbutton", name="Instances", exact=True).fill("2")
    expect(total).to_have_text("¥3,548.16 / month")
    page.get_by_label("Pay as you go").check()
    expect(total).to_have_text("¥7.04 / hour")


def test_scaling_shows_the_new_price_and_asks_before_it_scales(page, live_server, alice, org, catalog, cluster):
    model = CatalogModel.objects.prefetch_related("variants").get(slug="qwen2.5-7b-instruct")
    service = service_create(org=org, actor=alice, catalog_model=model, region=cluster.region, name="s1")
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/services/{service.pk}/")

    page.get_by_role("spinbutton", name="Instances", exact=True).fill("3")
    preview = page.locator("#scale-confirm .scale-price")
    expect(preview).to_contain_text("¥10.56 / hour")
    expect(preview).to_contain_text("+¥7.04 / hour")

    page.get_by_role("spinbutton", name="Instances", exact=True).fill("50")
    expect(page.locator("#scale-confirm .error")).to_contain_text("from 1 to 32")

    page.get_by_role("spinbutton", name="Instances", exact=True).fill("3")
    expect(preview).to_contain_text("¥10.56 / hour")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(f"**/services/{service.pk}/scale/")
    assert "¥10.56 / hour" in page.locator("#scale-new-price").inner_text()
    assert Service.objects.get(pk=service.pk).instances == 1  # asked, not yet scaled

    page.get_by_role("button", name="Scale to 3 instances").click()
    page.wait_for_url(f"**/services/{service.pk}/")
    assert "Scaling acme/s1 to 3 instances." in page.locator(".messages").inner_text()
    assert Service.objects.get(pk=service.pk).instances == 3


def test_an_invalid_count_stays_in_the_styled_service_page(page, live_server, alice, org, catalog, cluster):
    model = CatalogModel.objects.prefetch_related("variants").get(slug="qwen2.5-7b-instruct")
    service = service_create(org=org, actor=alice, catalog_model=model, region=cluster.region, name="s1")
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/services/{service.pk}/")
    page.get_by_role("spinbutton", name="Instances", exact=True).fill("0")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_load_state()
    assert page.locator("header").is_visible() and page.locator("#service-status").is_visible()
    assert "Enter a whole number of instances from 1 to 32." in page.locator(".field .error").inner_text()
    assert Service.objects.get(pk=service.pk).instances == 1
