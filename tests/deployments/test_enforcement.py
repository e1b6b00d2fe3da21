"""Stopping the pay-as-you-go services of overdrawn orgs (billing picks the orgs; the control plane stops)."""

import pytest

from deployments.enforcement import OVERDRAWN_REASON, overdrawn_services_stop
from deployments.models import BillingMode, EventKind, Service, ServiceStatus
from deployments.services import service_create, service_delete, service_stop
from tenancy.models import AuditEvent
from tests.deployments.helpers import qwen

pytestmark = pytest.mark.django_db


@pytest.fixture
def deploy(catalog, kube_cluster, region, alice):
    def deploy(org, name, actor=alice):
        return service_create(org=org, actor=actor, catalog_model=qwen(), region=region, name=name, instances=1)

    return deploy


def test_payg_services_of_the_given_orgs_stop_with_the_reason_on_their_timeline(org, other_org, deploy):
    chat = deploy(org, "chat")
    rival = deploy(other_org, "rival", actor=None)  # alice is an outsider there: the platform deploys it

    assert overdrawn_services_stop(org_ids=[org.pk], grace_hours=24) == 1

    chat = Service.objects.get(pk=chat.pk)
    assert (chat.desired_running, chat.status, chat.status_reason) == (False, ServiceStatus.STOPPING, OVERDRAWN_REASON)
    event = chat.events.filter(kind=EventKind.STATUS).order_by("-created_at", "-id").first()
    assert (event.status, event.reason, event.actor) == (ServiceStatus.STOPPING, OVERDRAWN_REASON, None)
    assert "24 hours" in event.message
    audit = AuditEvent.objects.get(action="billing.stop_overdrawn")
    assert (audit.org, audit.target_id, audit.data) == (org, str(chat.pk), {"grace_hours": 24})
    assert Service.objects.get(pk=rival.pk).desired_running  # another org's service is not touched


def test_subscription_stopped_and_deleted_services_are_left_alone(org, alice, deploy):
    monthly = deploy(org, "monthly")
    Service.objects.filter(pk=monthly.pk).update(billing_mode=BillingMode.SUBSCRIPTION)  # paid up front
    service_stop(service=deploy(org, "stopped"), actor=alice)
    service_delete(service=deploy(org, "deleted"), actor=alice)

    assert overdrawn_services_stop(org_ids=[org.pk], grace_hours=24) == 0
    assert Service.objects.get(pk=monthly.pk).desired_running
    assert not AuditEvent.objects.filter(action="billing.stop_overdrawn").exists()


def test_a_second_pass_stops_nothing_more(org, deploy):
    deploy(org, "chat")
    assert overdrawn_services_stop(org_ids=[org.pk], grace_hours=2) == 1
    assert overdrawn_services_stop(org_ids=[org.pk], grace_hours=2) == 0
    assert AuditEvent.objects.filter(action="billing.stop_overdrawn").count() == 1


def test_no_overdrawn_org_stops_nothing(org, deploy):
    chat = deploy(org, "chat")
    assert overdrawn_services_stop(org_ids=[], grace_hours=24) == 0
    assert Service.objects.get(pk=chat.pk).desired_running
