"""The scaling policy in a real browser, under the console's CSP: the autoscaling fields appear with the mode, the
deploy form's price range follows the bounds, the Scaling panel saves over htmx and shows a refused value on its
field, and scaling an autoscaling service by hand asks whether to switch to fixed or move the bounds."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing.services import ledger_adjust
from catalog.models import CatalogModel
from deployments.models import Service
from deployments.policy import ScalingPolicy
from deployments.services import local_cluster_create, service_create, service_set_policy
from tests.browser.test_console_browser import _sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
AUTOSCALE = "Autoscale: between a minimum and a maximum, following demand"
FIXED = "Fixed: the instances you set"


@pytest.fixture
def cluster(region):
    return local_cluster_create(name="local", region=region)


def _model():
    return CatalogModel.objects.prefetch_related("variants").get(slug="qwen2.5-7b-instruct")


def test_the_deploy_form_shows_the_policy_and_its_price_range(page, live_server, alice, org, catalog, cluster):
    ledger_adjust(org=org, amount=Decimal("1000"), reason="funds", actor=None)
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/services/new/qwen2.5-7b-instruct/")
    fields = page.locator("fieldset.policy-fields")
    expect(fields).to_be_hidden()  # fixed is the default
    assert page.locator("#price-range").inner_text() == "¥3.52 / hour · ¥2,534.40 / month"
    expect(page.locator("#price-estimate")).to_contain_text("no usage history yet")

    page.get_by_label(AUTOSCALE).check()
    expect(fields).to_be_visible()
    page.get_by_label("Minimum instances").fill("0")
    page.get_by_label("Maximum instances").fill("4")
    expect(page.locator("#price-range")).to_have_text("¥0.00 – ¥14.08 / hour · ¥0.00 – ¥10,137.60 / month")
    page.get_by_label(FIXED).check()
    expect(fields).to_be_hidden()
    expect(page.locator("#price-range")).to_have_text("¥3.52 / hour · ¥2,534.40 / month")

    page.get_by_label(AUTOSCALE).check()
    page.get_by_label("Service name").fill("elastic")
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.wait_for_url("**/services/*/")
    service = Service.objects.get(name="elastic")
    assert (service.scaling_mode, service.min_instances, service.max_instances) == ("autoscale", 0, 4)
    expect(page.locator("#scaling-summary")).to_contain_text("Autoscaling between 0 and 4 instances")


def test_the_scaling_panel_saves_over_htmx_and_shows_errors_on_fields(page, live_server, alice, org, catalog, cluster):
    service = service_create(org=org, actor=alice, catalog_model=_model(), region=cluster.region, name="s1")
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/services/{service.pk}/")
    panel = page.locator("#service-scaling")
    expect(panel.locator("fieldset.policy-fields")).to_be_hidden()
    panel.get_by_label(AUTOSCALE).check()
    expect(panel.locator("fieldset.policy-fields")).to_be_visible()
    panel.get_by_label("Minimum instances").fill("5")
    panel.get_by_label("Maximum instances").fill("3")
    panel.get_by_role("button", name="Save scaling policy").click()
    error = page.locator("#service-scaling .field.has-error .error")
    expect(error).to_have_text("The minimum (5) is above the maximum (3) instances.")
    expect(page.locator("#service-scaling fieldset.policy-fields")).to_be_visible()
    assert Service.objects.get(pk=service.pk).scaling_mode == "fixed"

    page.locator("#service-scaling").get_by_label("Minimum instances").fill("1")
    page.locator("#service-scaling").get_by_role("button", name="Save scaling policy").click()
    expect(page.locator("#service-scaling [role=status]")).to_have_text("Scaling policy saved.")
    expect(page.locator("#scaling-summary")).to_contain_text("Autoscaling between 1 and 3 instances")
    expect(page.locator("#service-scaling #price-range")).to_contain_text("¥3.52 – ¥10.56 / hour")
    assert page.url.endswith(f"/services/{service.pk}/")  # swapped in place, no navigation
    assert Service.objects.get(pk=service.pk).max_instances == 3


def test_scaling_an_autoscaling_service_by_hand_asks_fixed_or_bounds(page, live_server, alice, org, catalog, cluster):
    service = service_create(org=org, actor=alice, catalog_model=_model(), region=cluster.region, name="s1")
    service_set_policy(
        service=service, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=1, max_instances=4)
    )
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/services/{service.pk}/")
    expect(page.locator("#scale-autoscale-note")).to_contain_text("autoscales between 1 and 4 instances")
    page.locator("input[name=instances]").fill("3")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(f"**/services/{service.pk}/scale/")
    expect(page.locator("#scale-choice-fixed")).to_contain_text("the autoscaler stops")
    expect(page.locator("#scale-choice-bounds")).to_contain_text("keeps autoscaling, between 3 and 4 instances")
    expect(page.locator("#scale-choice-bounds #price-range")).to_contain_text("¥10.56 – ¥14.08 / hour")
    page.get_by_role("button", name="Keep autoscaling (3–4)").click()
    page.wait_for_url(f"**/services/{service.pk}/")
    service.refresh_from_db()
    assert (service.scaling_mode, service.instances, service.min_instances, service.max_instances) == (
        "autoscale",
        3,
        3,
        4,
    )
