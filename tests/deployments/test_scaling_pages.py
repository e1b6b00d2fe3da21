"""The scaling policy in the console and /api/services: the Scaling panel, the deploy form's policy and price range,
the scale confirmation's choice for an autoscaling service, the staff pages for GPU quotas and public services."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.services import ledger_adjust
from deployments.models import GpuQuota, Service
from deployments.policy import ScalingPolicy
from deployments.services import service_create, service_set_policy
from tenancy.models import AuditEvent
from tenancy.services import apikey_create
from tests.deployments.helpers import qwen
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
NEW = reverse("deployments:service-new", args=["qwen2.5-7b-instruct"])
PRICE = reverse("deployments:service-price", args=["qwen2.5-7b-instruct"])
POLICY = {
    "scaling_mode": "autoscale",
    "min_instances": "0",
    "max_instances": "4",
    "scaling_target": "concurrency",
    "target_value": "8",
    "scale_down_window_s": "300",
    "idle_to_zero_s": "600",
    "max_wake_wait_s": "120",
}


@pytest.fixture
def service(org, alice, catalog, kube_cluster, region):
    return service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat")


@pytest.fixture
def staff_client(db):
    from django.test import Client

    client = Client()
    client.force_login(UserFactory(email="ops@example.com", is_staff=True))
    return client


# --- the Scaling panel --------------------------------------------------------------------------------------


def test_the_service_page_shows_the_policy_and_its_cost(alice_client, service):
    html = alice_client.get(reverse("deployments:service-detail", args=[service.pk])).content.decode()
    assert 'id="service-scaling"' in html and "Fixed at 1 instance." in html
    assert 'data-shown-when="scaling_mode=autoscale"' in html
    assert "¥3.52 / hour · ¥2,534.40 / month" in html  # 1 × 3.52, × 720
    assert "Not enough history yet" in html  # deployed just now


def test_saving_a_policy_with_htmx_swaps_the_panel(alice_client, service):
    url = reverse("deployments:service-scaling", args=[service.pk])
    response = alice_client.post(url, POLICY, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="service-scaling")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "Scaling policy saved." in html and "Autoscaling between 0 and 4 instances" in html
    assert "¥0.00 – ¥14.08 / hour · ¥0.00 – ¥10,137.60 / month" in html
    service.refresh_from_db()
    assert (service.scaling_mode, service.min_instances, service.max_instances) == ("autoscale", 0, 4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_instances": "5"}, "The minimum (5) is above the maximum (4) instances."),
        ({"target_value": "0"}, "The target is 1 to 1000 concurrent requests per instance."),
        ({"scaling_target": "kv_cache", "target_value": "99"}, "The KV-cache usage target is 10 to 95 %."),
        ({"idle_to_zero_s": "10"}, "The idle time before scaling to zero is 60 to 86400 seconds."),
        ({"max_instances": "x"}, "Enter a whole number."),
    ],
)
def test_a_refused_policy_comes_back_on_its_field(alice_client, service, changes, message):
    url = reverse("deployments:service-scaling", args=[service.pk])
    fragment = alice_client.post(url, {**POLICY, **changes}, HTTP_HX_REQUEST="true").content.decode()
    assert message in fragment and 'class="field has-error"' in fragment
    page = alice_client.post(url, {**POLICY, **changes})
    assert page.status_code == 200 and "<html" in page.content.decode() and message in page.content.decode()
    assert Service.objects.get(pk=service.pk).scaling_mode == "fixed"


def test_without_htmx_a_saved_policy_redirects_to_the_service(alice_client, service):
    url = reverse("deployments:service-scaling", args=[service.pk])
    response = alice_client.post(url, POLICY)
    assert response.status_code == 302 and response.url == reverse("deployments:service-detail", args=[service.pk])


def test_a_member_may_not_and_an_outsider_gets_404(bob_client, charlie_client, service):
    url = reverse("deployments:service-scaling", args=[service.pk])
    assert "does not allow this" in bob_client.post(url, POLICY).content.decode()
    assert charlie_client.post(url, POLICY).status_code == 404
    assert charlie_client.get(url).status_code == 404
    assert Service.objects.get(pk=service.pk).scaling_mode == "fixed"


def test_the_panel_is_in_chinese(alice_client, service):
    html = alice_client.get(
        reverse("deployments:service-detail", args=[service.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "保存扩缩容策略" in html and "固定为 1 个实例。" in html


# --- the deploy form ------------------------------------------------------------------------------------------


def test_the_deploy_price_shows_the_autoscaling_range_and_no_history(alice_client, catalog, kube_cluster):
    fragment = alice_client.get(
        PRICE, {"region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg", **POLICY}
    ).content.decode()
    assert "Cost at 0–4 instances" in fragment
    assert "¥0.00 – ¥14.08 / hour · ¥0.00 – ¥10,137.60 / month" in fragment
    assert "A new service has no usage history yet" in fragment
    fixed = alice_client.get(PRICE, {"region": "cn-shanghai-2", "instances": "2"}).content.decode()
    assert "¥7.04 / hour · ¥5,068.80 / month" in fixed


def test_deploying_with_autoscaling_stores_the_policy(alice_client, org, catalog, kube_cluster):
    ledger_adjust(org=org, amount=Decimal("1000"), reason="funds", actor=None)
    base = {"name": "auto", "region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg"}
    response = alice_client.post(NEW, {**base, **POLICY, "target_value": "16"})
    assert response.status_code == 302, response.content.decode()
    service = Service.objects.get(name="auto")
    assert ScalingPolicy.of(service) == ScalingPolicy(
        scaling_mode="autoscale", min_instances=0, max_instances=4, target_value=16
    )
    assert service.instances == 1


def test_the_deploy_form_shows_a_policy_error_on_its_field(alice_client, catalog, kube_cluster):
    base = {"name": "auto", "region": "cn-shanghai-2", "instances": "1", "billing_mode": "subscription"}
    html = alice_client.post(NEW, {**base, **POLICY}).content.decode()
    assert "its minimum is at least 1" in html
    assert not Service.objects.exists()


def test_the_deploy_form_refuses_beyond_the_quota(alice_client, org, catalog, kube_cluster, settings):
    settings.DEPLOY_DEFAULT_GPU_QUOTA = 3
    ledger_adjust(org=org, amount=Decimal("1000"), reason="funds", actor=None)
    base = {"name": "auto", "region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg"}
    html = alice_client.post(NEW, {**base, **POLICY}).content.decode()
    assert "GPU quota in cn-shanghai-2 is 3 GPUs" in html
    assert not Service.objects.exists()


# --- scaling an autoscaling service by hand -------------------------------------------------------------------


@pytest.fixture
def autoscaled(service, alice):
    return service_set_policy(
        service=service, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=1, max_instances=4)
    )


def test_the_confirmation_offers_fixed_or_moved_bounds_with_their_prices(alice_client, autoscaled):
    url = reverse("deployments:service-scale", args=[autoscaled.pk])
    html = alice_client.post(url, {"instances": "6"}).content.decode()
    assert "This service autoscales between 1 and 4 instances." in html
    assert 'id="scale-choice-fixed"' in html and 'id="scale-choice-bounds"' in html
    assert "Switch to fixed at 6 instances" in html and "Keep autoscaling (6–6)" in html
    assert "¥21.12 / hour · ¥15,206.40 / month" in html  # fixed at 6 × 3.52
    assert Service.objects.get(pk=autoscaled.pk).instances == 1
    # Confirmed without a choice: asked again, nothing changes.
    again = alice_client.post(url, {"instances": "6", "confirmed": "1"}).content.decode()
    assert 'id="scale-choice-bounds"' in again and Service.objects.get(pk=autoscaled.pk).instances == 1


def test_keeping_autoscaling_moves_the_bounds(alice_client, autoscaled):
    url = reverse("deployments:service-scale", args=[autoscaled.pk])
    alice_client.post(url, {"instances": "3", "confirmed": "1", "on_autoscale": "bounds"})
    service = Service.objects.get(pk=autoscaled.pk)
    assert (service.scaling_mode, service.instances, service.min_instances, service.max_instances) == (
        "autoscale",
        3,
        3,
        4,
    )


def test_switching_to_fixed_at_the_same_count(alice_client, autoscaled):
    url = reverse("deployments:service-scale", args=[autoscaled.pk])
    alice_client.post(url, {"instances": "1", "confirmed": "1", "on_autoscale": "fixed"})
    service = Service.objects.get(pk=autoscaled.pk)
    assert (service.scaling_mode, service.instances) == ("fixed", 1)


def test_a_fixed_services_confirmation_shows_the_price_and_estimate(alice_client, service):
    html = alice_client.post(reverse("deployments:service-scale", args=[service.pk]), {"instances": "2"}).content
    assert b'id="price-range"' in html and b'id="price-estimate"' in html and b"scale-choice" not in html


# --- /api/services ----------------------------------------------------------------------------------------------


@pytest.fixture
def api(org, alice):
    from rest_framework.test import APIClient

    _key, raw = apikey_create(org=org, actor=alice, name="ci", manage=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_the_api_reads_and_patches_the_policy(api, service):
    url = f"/api/services/{service.pk}/"
    assert api.get(url).json()["scaling"] == ScalingPolicy(min_instances=1, max_instances=1).as_dict()
    response = api.patch(f"{url}scaling/", {"scaling_mode": "autoscale", "max_instances": 3}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["scaling"]["scaling_mode"] == "autoscale"
    assert response.json()["scaling"]["max_instances"] == 3 and response.json()["scaling"]["min_instances"] == 1
    assert AuditEvent.objects.filter(action="service.policy").exists()


def test_the_api_deploys_with_a_scaling_policy(api, service):
    body = {"name": "elastic", "model": service.catalog_model.slug, "region": service.region.code}
    fixed = api.post("/api/services/", body, format="json")
    assert fixed.status_code == 201 and fixed.json()["scaling"]["scaling_mode"] == "fixed"
    elastic = api.post(
        "/api/services/",
        {**body, "name": "elastic2", "scaling_mode": "autoscale", "min_instances": 0, "max_instances": 3},
        format="json",
    )
    assert elastic.status_code == 201, elastic.content
    scaling = elastic.json()["scaling"]
    assert (scaling["scaling_mode"], scaling["min_instances"], scaling["max_instances"]) == ("autoscale", 0, 3)
    assert Service.objects.get(pk=elastic.json()["id"]).instances == 1  # starts with one instance
    refused = api.post(
        "/api/services/", {**body, "name": "elastic3", "min_instances": 3, "max_instances": 2}, format="json"
    )
    assert (refused.status_code, refused.json()["field"]) == (400, "min_instances")
    assert not Service.objects.filter(name="elastic3").exists()


def test_the_api_refuses_a_policy_in_drfs_shape(api, service):
    url = f"/api/services/{service.pk}/scaling/"
    assert api.patch(url, {"min_instances": 3, "max_instances": 2}, format="json").json() == {
        "detail": "The minimum (3) is above the maximum (2) instances.",
        "code": "invalid",
        "field": "min_instances",
    }
    kv = api.patch(url, {"scaling_target": "kv_cache", "target_value": 99}, format="json")
    assert kv.status_code == 400 and kv.json()["field"] == "target_value"
    assert api.patch(url, {"max_wake_wait_s": 1}, format="json").json() == {
        "max_wake_wait_s": ["Ensure this value is greater than or equal to 5."]
    }
    GpuQuota.objects.create(org=service.org, region=service.region, max_gpus=2)
    quota = api.patch(url, {"scaling_mode": "autoscale", "max_instances": 3}, format="json").json()
    assert (quota["code"], quota["field"]) == ("quota_exceeded", "max_instances")


def test_the_api_scale_of_an_autoscaling_service_can_keep_it_autoscaling(api, autoscaled):
    url = f"/api/services/{autoscaled.pk}/scale/"
    body = api.post(url, {"instances": 2, "on_autoscale": "bounds"}, format="json").json()
    assert (body["instances"], body["scaling"]["scaling_mode"], body["scaling"]["min_instances"]) == (
        2,
        "autoscale",
        2,
    )
    body = api.post(url, {"instances": 3}, format="json").json()
    assert (body["instances"], body["scaling"]["scaling_mode"]) == (3, "fixed")


def test_a_member_key_may_not_patch_the_policy(org, bob, service):
    from rest_framework.test import APIClient

    _key, raw = apikey_create(org=org, actor=None, name="bob's", manage=True)
    from tenancy.models import ApiKey

    ApiKey.objects.filter(name="bob's").update(created_by=bob)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.patch(f"/api/services/{service.pk}/scaling/", {"scaling_mode": "autoscale"}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


# --- platform staff: GPU quotas and public services -----------------------------------------------------------


def test_the_quota_page_lists_orgs_by_region_and_sets_a_quota(staff_client, org, other_org, service, region):
    page = staff_client.get(reverse("deployments:gpu-quotas")).content.decode()
    assert 'id="quota-acme-cn-shanghai-2"' in page and 'id="quota-rival-cn-shanghai-2"' in page
    url = reverse("deployments:gpu-quota", args=[org.pk, region.code])
    response = staff_client.post(url, {"max_gpus": "12"})
    assert response.status_code == 302
    assert GpuQuota.objects.get(org=org, region=region).max_gpus == 12
    assert AuditEvent.objects.get(action="gpu_quota.set").data == {
        "region": "cn-shanghai-2",
        "before": None,
        "after": 12,
    }
    staff_client.post(url, {"max_gpus": ""})
    assert not GpuQuota.objects.exists()
    refused = staff_client.post(url, {"max_gpus": "-3"}, follow=True).content.decode()
    assert "greater than or equal to 0" in refused and not GpuQuota.objects.exists()


def test_quota_pages_are_staff_only(alice_client, org, region, public_org):
    assert alice_client.get(reverse("deployments:gpu-quotas")).status_code == 404
    assert (
        alice_client.post(reverse("deployments:gpu-quota", args=[org.pk, region.code]), {"max_gpus": "99"}).status_code
        == 404
    )
    assert alice_client.get(reverse("deployments:platform-services")).status_code == 404
    assert not GpuQuota.objects.exists()


def test_the_quota_page_query_count_is_pinned(staff_client, org, other_org, region, django_assert_max_num_queries):
    from tests.factories import OrganizationFactory, RegionFactory

    RegionFactory(code="cn-beijing-1")
    for i in range(8):
        OrganizationFactory(namespace=f"team-{i}")
    with django_assert_max_num_queries(12):
        response = staff_client.get(reverse("deployments:gpu-quotas"))
    assert response.status_code == 200 and response.content.decode().count('name="max_gpus"') == 20


def test_staff_set_a_public_services_policy_from_the_console(staff_client, public_org, catalog, kube_cluster, region):
    public = service_create(org=public_org, actor=None, catalog_model=qwen(), region=region, name="qwen-small")
    listing = staff_client.get(reverse("deployments:platform-services")).content.decode()
    assert "public/qwen-small" in listing
    url = reverse("deployments:platform-service", args=[public.pk])
    page = staff_client.get(url).content.decode()
    assert "its cost is the platform's" in page
    response = staff_client.post(url, POLICY)
    assert response.status_code == 302 and response.url == url
    public.refresh_from_db()
    assert (public.scaling_mode, public.min_instances) == ("autoscale", 0)


def test_a_customer_service_is_not_a_platform_service(staff_client, service):
    assert staff_client.get(reverse("deployments:platform-service", args=[service.pk])).status_code == 404


def test_the_django_admin_sets_quotas_through_the_audited_service(admin_client, org, region):
    response = admin_client.post(
        reverse("admin:deployments_gpuquota_add"), {"org": org.pk, "region": region.pk, "max_gpus": "16"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert GpuQuota.objects.get(org=org, region=region).max_gpus == 16
    assert AuditEvent.objects.get(action="gpu_quota.set").data["after"] == 16
