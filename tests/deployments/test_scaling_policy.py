"""A service's scaling policy: every validation rule, the organization's GPU quota at deploy, scale and policy change,
manual scaling of an autoscaling service, the timeline and the audit trail."""

from decimal import Decimal

import pytest

from billing.services import ledger_adjust
from core.errors import ApplicationError, PermissionDenied
from deployments.models import BillingMode, EventKind, GpuQuota, ManualScale, Service, ServiceStatus
from deployments.policy import (
    PriceRange,
    ScalingPolicy,
    gpus_held,
    policy_check,
    quota_overview,
)
from deployments.services import gpu_quota_set, service_create, service_delete, service_scale, service_set_policy
from tenancy.models import AuditEvent
from tests.deployments.helpers import qwen
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

AUTO = {"scaling_mode": "autoscale"}


@pytest.fixture
def service(org, alice, catalog, kube_cluster, region):
    return service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=2)


@pytest.fixture
def staff(db):
    return UserFactory(email="ops@example.com", is_staff=True)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"min_instances": 3, "max_instances": 2}, "min_instances", "The minimum (3) is above the maximum (2)"),
        ({"max_instances": 33}, "max_instances", "from 1 to 32"),
        ({"max_instances": 0}, "max_instances", "from 1 to 32"),
        ({"min_instances": -1}, "min_instances", "from 0 to 32"),
        ({"scaling_mode": "turbo"}, "scaling_mode", "fixed or autoscale"),
        ({"scaling_target": "gpu"}, "scaling_target", "concurrency, ttft_p95 or kv_cache"),
        ({"scaling_target": "concurrency", "target_value": 0}, "target_value", "1 to 1000 concurrent requests"),
        ({"scaling_target": "concurrency", "target_value": 1001}, "target_value", "1 to 1000 concurrent requests"),
        ({"scaling_target": "ttft_p95", "target_value": 49}, "target_value", "50 to 60000 ms"),
        ({"scaling_target": "ttft_p95", "target_value": 60001}, "target_value", "50 to 60000 ms"),
        ({"scaling_target": "kv_cache", "target_value": 9}, "target_value", "10 to 95 %"),
        ({"scaling_target": "kv_cache", "target_value": 96}, "target_value", "10 to 95 %"),
        ({"scale_down_window_s": 3601}, "scale_down_window_s", "0 to 3600 seconds"),
        ({"idle_to_zero_s": 59}, "idle_to_zero_s", "60 to 86400 seconds"),
        ({"idle_to_zero_s": 86401}, "idle_to_zero_s", "60 to 86400 seconds"),
        ({"max_wake_wait_s": 4}, "max_wake_wait_s", "5 to 600 seconds"),
        ({"max_wake_wait_s": 601}, "max_wake_wait_s", "5 to 600 seconds"),
        ({"target_value": True}, "target_value", "concurrent requests"),
    ],
)
def test_a_policy_out_of_range_is_refused_with_its_field(service, alice, changes, field, message):
    policy = ScalingPolicy.of(service).merged(**{**AUTO, "max_instances": 4, **changes})
    with pytest.raises(ApplicationError) as refused:
        service_set_policy(service=service, actor=alice, policy=policy)
    assert (refused.value.field, refused.value.status) == (field, 400)
    assert message in refused.value.message
    service.refresh_from_db()
    assert service.scaling_mode == "fixed" and service.generation == 1
    assert not AuditEvent.objects.filter(action="service.policy").exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"scaling_target": "concurrency", "target_value": 1},
        {"scaling_target": "concurrency", "target_value": 1000},
        {"scaling_target": "ttft_p95", "target_value": 50},
        {"scaling_target": "ttft_p95", "target_value": 60000},
        {"scaling_target": "kv_cache", "target_value": 10},
        {"scaling_target": "kv_cache", "target_value": 95},
        {"scale_down_window_s": 0, "idle_to_zero_s": 60, "max_wake_wait_s": 5},
        {"scale_down_window_s": 3600, "idle_to_zero_s": 86400, "max_wake_wait_s": 600},
        {"min_instances": 0, "max_instances": 32},
    ],
)
def test_the_ends_of_every_range_are_accepted(changes):
    policy_check(ScalingPolicy(**{**AUTO, "max_instances": 4, **changes}), billing_mode=BillingMode.PAYG)


def test_zero_instances_is_for_pay_as_you_go_only():
    zero = ScalingPolicy(scaling_mode="autoscale", min_instances=0, max_instances=2)
    policy_check(zero, billing_mode=BillingMode.PAYG)
    with pytest.raises(ApplicationError) as refused:
        policy_check(zero, billing_mode=BillingMode.SUBSCRIPTION)
    assert refused.value.field == "min_instances" and "at least 1" in refused.value.message
    policy_check(zero.merged(min_instances=1), billing_mode=BillingMode.SUBSCRIPTION)


def test_a_subscription_service_cannot_scale_to_zero(org, alice, catalog, kube_cluster, region):
    ledger_adjust(org=org, amount=Decimal("100000"), reason="funds", actor=None)
    monthly = service_create(
        org=org,
        actor=alice,
        catalog_model=qwen(),
        region=region,
        name="monthly",
        billing_mode=BillingMode.SUBSCRIPTION,
    )
    with pytest.raises(ApplicationError) as refused:
        service_set_policy(
            service=monthly, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=0)
        )
    assert refused.value.field == "min_instances"


def test_setting_a_policy_records_it_on_the_timeline_and_in_the_audit_trail(service, alice):
    policy = ScalingPolicy(scaling_mode="autoscale", min_instances=0, max_instances=4, target_value=16)
    updated = service_set_policy(service=service, actor=alice, policy=policy)
    assert ScalingPolicy.of(Service.objects.get(pk=service.pk)) == policy
    assert updated.instances == 2  # within the new bounds: left alone
    event = updated.events.get(reason="PolicyChanged")
    assert event.kind == EventKind.SCALE and event.actor == alice
    assert event.message == "autoscale between 0 and 4 instances; target: Concurrent requests per instance 16"
    audit = AuditEvent.objects.get(action="service.policy")
    assert audit.data["before"]["scaling_mode"] == "fixed" and audit.data["after"] == policy.as_dict()
    # The same policy again changes nothing and records nothing.
    service_set_policy(service=updated, actor=alice, policy=policy)
    assert AuditEvent.objects.filter(action="service.policy").count() == 1
    assert updated.events.filter(reason="PolicyChanged").count() == 1


def test_autoscale_brings_the_instances_within_the_new_bounds(service, alice):
    low = service_set_policy(
        service=service, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=1, max_instances=1)
    )
    assert (low.instances, low.generation) == (1, 2)
    assert low.events.filter(kind=EventKind.SCALE, message="2 → 1 instance").exists()
    high = service_set_policy(
        service=low, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=3, max_instances=5)
    )
    assert high.instances == 3 and high.last_scaled_at is not None
    fixed = service_set_policy(service=high, actor=alice, policy=ScalingPolicy.of(high).merged(scaling_mode="fixed"))
    assert (fixed.scaling_mode, fixed.instances) == ("fixed", 3)
    assert fixed.events.filter(message="fixed at 3 instances: no autoscaling").exists()


def test_a_deleted_service_has_no_policy_to_set(service, alice):
    service_delete(service=service, actor=alice)
    with pytest.raises(ApplicationError) as refused:
        service_set_policy(service=service, actor=alice, policy=ScalingPolicy(**AUTO, max_instances=3))
    assert refused.value.status == 409


# --- manual scaling never fights the autoscaler --------------------------------------------------------------


@pytest.fixture
def autoscaled(service, alice):
    return service_set_policy(
        service=service, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=1, max_instances=4)
    )


def test_scaling_an_autoscaled_service_by_hand_switches_it_to_fixed(autoscaled, alice):
    scaled = service_scale(service=autoscaled, actor=alice, instances=3)
    assert (scaled.scaling_mode, scaled.instances, scaled.min_instances, scaled.max_instances) == ("fixed", 3, 1, 4)
    assert scaled.events.filter(reason="PolicyChanged", message="fixed at 3 instances: no autoscaling").exists()
    audit = AuditEvent.objects.filter(action="service.scale").latest("created_at")
    assert audit.data["policy"]["after"]["scaling_mode"] == "fixed"


def test_scaling_up_with_bounds_raises_the_minimum(autoscaled, alice):
    scaled = service_scale(service=autoscaled, actor=alice, instances=6, on_autoscale=ManualScale.BOUNDS)
    assert (scaled.scaling_mode, scaled.instances, scaled.min_instances, scaled.max_instances) == (
        "autoscale",
        6,
        6,
        6,
    )


def test_scaling_down_with_bounds_lowers_the_maximum(autoscaled, alice):
    scaled = service_scale(service=autoscaled, actor=alice, instances=1, on_autoscale=ManualScale.BOUNDS)
    assert (scaled.scaling_mode, scaled.instances, scaled.min_instances, scaled.max_instances) == (
        "autoscale",
        1,
        1,
        1,
    )


def test_the_same_count_by_hand_still_switches_an_autoscaled_service_to_fixed(autoscaled, alice):
    scaled = service_scale(service=autoscaled, actor=alice, instances=2)
    assert (scaled.scaling_mode, scaled.instances, scaled.generation) == ("fixed", 2, autoscaled.generation)


def test_an_unknown_manual_scale_choice_is_refused(autoscaled, alice):
    with pytest.raises(ApplicationError) as refused:
        service_scale(service=autoscaled, actor=alice, instances=3, on_autoscale="both")
    assert refused.value.field == "on_autoscale"


# --- the GPU quota ----------------------------------------------------------------------------------------------


@pytest.fixture
def quota_of_4(settings):
    settings.DEPLOY_DEFAULT_GPU_QUOTA = 4


def _deploy(org, actor, region, name, instances=1, policy=None):
    return service_create(
        org=org, actor=actor, catalog_model=qwen(), region=region, name=name, instances=instances, policy=policy
    )


def test_the_default_quota_limits_deploys(quota_of_4, org, alice, catalog, kube_cluster, region):
    _deploy(org, alice, region, "a", instances=3)
    with pytest.raises(ApplicationError) as refused:
        _deploy(org, alice, region, "b", instances=2)
    assert (refused.value.field, refused.value.code) == ("instances", "quota_exceeded")
    assert "quota in cn-shanghai-2 is 4 GPUs: its other services hold 3, and this needs 2" in refused.value.message
    assert not Service.objects.filter(name="b").exists()
    _deploy(org, alice, region, "b", instances=1)
    assert gpus_held(org, region) == 4


def test_an_autoscaling_service_counts_at_its_maximum(quota_of_4, org, alice, catalog, kube_cluster, region):
    auto = ScalingPolicy(scaling_mode="autoscale", min_instances=0, max_instances=3)
    created = _deploy(org, alice, region, "a", policy=auto)
    assert created.instances == 1 and gpus_held(org, region) == 3
    with pytest.raises(ApplicationError) as refused:
        _deploy(org, alice, region, "b", instances=2)
    assert refused.value.code == "quota_exceeded"
    with pytest.raises(ApplicationError) as too_wide:
        _deploy(org, alice, region, "c", policy=auto.merged(max_instances=5))
    assert too_wide.value.field == "max_instances"


def test_the_quota_applies_at_manual_scale_and_policy_change(quota_of_4, org, alice, catalog, kube_cluster, region):
    one = _deploy(org, alice, region, "a", instances=2)
    two = _deploy(org, alice, region, "b", instances=1)
    with pytest.raises(ApplicationError) as scale:
        service_scale(service=two, actor=alice, instances=3)
    assert (scale.value.field, scale.value.code) == ("instances", "quota_exceeded")
    with pytest.raises(ApplicationError) as policy:
        service_set_policy(service=two, actor=alice, policy=ScalingPolicy(**AUTO, min_instances=1, max_instances=3))
    assert (policy.value.field, policy.value.code) == ("max_instances", "quota_exceeded")
    service_scale(service=two, actor=alice, instances=2)  # exactly the quota
    service_delete(service=one, actor=alice)  # a deleting service holds nothing
    service_scale(service=two, actor=alice, instances=4)
    assert Service.objects.get(pk=two.pk).instances == 4


def test_an_admin_quota_replaces_the_default_for_that_org_and_region(
    quota_of_4, org, alice, other_org, catalog, kube_cluster, region, staff
):
    gpu_quota_set(actor=staff, org=org, region=region, max_gpus=6)
    _deploy(org, alice, region, "a", instances=6)
    with pytest.raises(ApplicationError):
        _deploy(org, alice, region, "b")
    gpu_quota_set(actor=staff, org=org, region=region, max_gpus=None)  # back to the default
    assert not GpuQuota.objects.exists()
    assert [a.data for a in AuditEvent.objects.filter(action="gpu_quota.set").order_by("created_at")] == [
        {"region": "cn-shanghai-2", "before": None, "after": 6},
        {"region": "cn-shanghai-2", "before": 6, "after": None},
    ]
    rows = {(row.org.namespace, row.max_gpus, row.held, row.over) for row in quota_overview([org, other_org], [region])}
    assert rows == {("acme", 4, 6, True), ("rival", 4, 0, False)}


def test_only_platform_staff_set_quotas(org, alice, region):
    with pytest.raises(PermissionDenied):
        gpu_quota_set(actor=alice, org=org, region=region, max_gpus=100)
    assert not GpuQuota.objects.exists()


@pytest.mark.parametrize("value", [-1, 100_001, "8"])
def test_a_quota_out_of_range_is_refused(org, staff, region, value):
    with pytest.raises(ApplicationError) as refused:
        gpu_quota_set(actor=staff, org=org, region=region, max_gpus=value)
    assert refused.value.field == "max_gpus"


# --- the platform's public services ----------------------------------------------------------------------------


@pytest.fixture
def public_service(public_org, catalog, kube_cluster, region):
    return _deploy(public_org, None, region, "qwen-small", instances=1)


def test_staff_set_a_public_services_policy_and_members_may_not(public_service, staff, alice):
    with pytest.raises(PermissionDenied):
        service_set_policy(service=public_service, actor=alice, policy=ScalingPolicy(**AUTO, min_instances=0))
    service_set_policy(service=public_service, actor=staff, policy=ScalingPolicy(**AUTO, min_instances=0))
    assert Service.objects.get(pk=public_service.pk).min_instances == 0
    assert AuditEvent.objects.get(action="service.policy").actor == staff


def test_the_public_org_has_no_default_quota_only_a_set_one(
    quota_of_4, public_org, catalog, kube_cluster, region, staff
):
    _deploy(public_org, None, region, "a", instances=5)
    gpu_quota_set(actor=staff, org=public_org, region=region, max_gpus=5)
    with pytest.raises(ApplicationError):
        _deploy(public_org, None, region, "b", instances=1)


# --- price range and the last week's estimate ---------------------------------------------------------------


def test_the_price_range_spans_min_to_max_per_hour_and_month():
    payg = PriceRange("CNY", Decimal("3.52"), Decimal("1774.08"), 0, 4)
    assert (payg.low_hourly, payg.high_hourly, payg.low_monthly, payg.high_monthly) == (
        Decimal("0"),
        Decimal("14.08"),
        Decimal("0.00"),
        Decimal("10137.60"),  # 4 × 3.52 × 720
    )
    monthly = PriceRange("CNY", Decimal("3.52"), Decimal("1774.08"), 1, 3, subscription=True)
    assert (monthly.low_monthly, monthly.high_monthly) == (Decimal("1774.08"), Decimal("6842.88"))  # + 2 × 2534.40


def test_scaling_an_idle_service_by_hand_starts_it(service, alice):
    service = service_set_policy(
        service=service, actor=alice, policy=ScalingPolicy(scaling_mode="autoscale", min_instances=0, max_instances=4)
    )
    Service.objects.filter(pk=service.pk).update(instances=0, status=ServiceStatus.IDLE)  # as the autoscaler left it
    service = service_scale(service=Service.objects.get(pk=service.pk), actor=alice, instances=2)
    assert (service.scaling_mode, service.instances, service.status) == ("fixed", 2, ServiceStatus.STARTING)
