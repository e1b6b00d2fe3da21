"""Scale to zero and wake on request, on the control-plane side: a service at zero instances is Idle (nothing runs,
nothing is billed), ``service_wake`` brings it back idempotently, ``wake_pending`` serves the gateway's wake set, and
a local engine is routed to only once it has loaded its model."""

import io
import time
from decimal import Decimal

import httpx
import pytest
from django.core.management import call_command

from catalog.models import CatalogModel
from deployments.drivers import local
from deployments.models import EventKind, Replica, ScalingMode, Service, ServiceStatus
from deployments.services import service_autoscale, service_create, service_wake, wake_pending
from deployments.serving_signals import wake_key
from deployments.texts import TIMELINE
from gateway.store import sredis
from tenancy.models import Organization
from tests.deployments.helpers import meters, passes, qwen, statuses

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny(org, alice, catalog, local_cluster, region):
    service = service_create(
        org=org, actor=alice, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name="tiny"
    )
    yield service
    local.stop_all(service)


def until(service, status, timeout=20.0) -> Service:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service = passes(service)
        if service.status == status:
            return service
        time.sleep(0.1)
    raise AssertionError(f"still {service.status}: {service.status_message}")


def health(base_url: str) -> int:
    """The status of the engine's /health once the process listens (a fresh process starts in about a second)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(f"{base_url}/health", timeout=5).status_code
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def scaled_to_zero(service: Service) -> Service:
    """As the autoscaler leaves a service after "→ 0: idle": autoscaling, minimum 0, no instance wanted."""
    Service.objects.filter(pk=service.pk).update(scaling_mode=ScalingMode.AUTOSCALE, min_instances=0, max_instances=2)
    service_autoscale(service_id=service.pk, instances=0, message=TIMELINE("autoscale_idle", a=1, n=10))
    return until(service, ServiceStatus.IDLE)  # its instance drained, then stopped


def test_a_service_at_zero_instances_is_idle_with_nothing_running_or_billed(tiny):
    service = until(tiny, ServiceStatus.RUNNING)
    pid, port = Replica.objects.values_list("pid", "port").get(service=service)
    service = scaled_to_zero(service)
    assert service.status == ServiceStatus.IDLE and service.ready_instances == 0
    assert not Replica.objects.filter(service=service).exists() and not local.process_alive(pid, port=port)
    assert meters(service) == [1, 0]
    assert passes(service).status == ServiceStatus.IDLE  # steady: another pass changes nothing
    assert statuses(service)[-1] == ServiceStatus.IDLE and meters(service) == [1, 0]


def test_a_wake_starts_the_service_once_and_says_why(tiny):
    service = scaled_to_zero(until(tiny, ServiceStatus.RUNNING))
    generation = service.generation
    woken = service_wake(service_id=service.pk)
    assert woken is not None
    assert (woken.instances, woken.generation, woken.status, woken.status_reason) == (
        1,
        generation + 1,
        ServiceStatus.STARTING,
        "Woken",
    )
    assert woken.last_scaled_at is not None
    assert service_wake(service_id=service.pk) is None  # idempotent: already has an instance
    assert service.events.filter(reason="Woken", kind=EventKind.SCALE).count() == 1  # and its status change
    assert service.events.get(reason="Woken", kind=EventKind.SCALE).message == "0 → 1: woken by a request"
    service = until(service, ServiceStatus.RUNNING)
    assert meters(service) == [1, 0, 1]


def test_only_autoscaling_services_at_zero_are_woken(tiny, alice):
    service = until(tiny, ServiceStatus.RUNNING)
    assert service_wake(service_id=service.pk) is None  # fixed, running
    service = scaled_to_zero(service)
    Service.objects.filter(pk=service.pk).update(desired_running=False)
    assert service_wake(service_id=service.pk) is None  # stopped by a person: a request does not restart it
    assert Service.objects.get(pk=service.pk).instances == 0


def test_a_wake_without_room_leaves_the_service_idle_and_says_so(tiny, local_cluster):
    service = scaled_to_zero(until(tiny, ServiceStatus.RUNNING))
    local_cluster.cordoned = True
    local_cluster.save(update_fields=["cordoned"])
    assert service_wake(service_id=service.pk) is None
    service.refresh_from_db()
    assert (service.status, service.status_reason, service.instances) == (ServiceStatus.IDLE, "WakeFailed", 0)
    assert "could not wake it" in service.status_message and "cordoned" in service.status_message


def test_wake_pending_wakes_what_held_requests_asked_for(tiny):
    service = scaled_to_zero(until(tiny, ServiceStatus.RUNNING))
    client = sredis()
    client.delete(wake_key())
    client.sadd(wake_key(), str(service.pk), "not-a-uuid", "6f1c1d1e-0000-4000-8000-000000000000")
    assert wake_pending() == [str(service.pk)]  # a bad or unknown id is skipped, the others still woken
    assert client.scard(wake_key()) == 0
    assert Service.objects.get(pk=service.pk).instances == 1
    client.sadd(wake_key(), str(service.pk))
    assert wake_pending() == []  # woken already


def test_a_local_engine_is_routed_to_only_once_it_has_loaded(tiny, settings):
    settings.LOCAL_ENGINE_STARTUP_S = Decimal("3")
    local.stop_all(tiny)
    service = passes(tiny)  # a fresh process, loading
    replica = Replica.objects.get(service=service)
    assert service.status in (ServiceStatus.CREATING, ServiceStatus.STARTING) and not replica.ready
    assert health(replica.base_url) == 503  # listening, loading
    refused = httpx.post(
        f"{replica.base_url}/v1/chat/completions",
        json={"model": service.model_id, "messages": [{"role": "user", "content": "hi"}]},
        timeout=5,
    )
    assert refused.status_code == 503  # as vLLM before it is ready
    assert meters(service) == []  # not billed while it loads
    service = until(service, ServiceStatus.RUNNING)
    assert Replica.objects.get(service=service).ready
    assert health(replica.base_url) == 200


def test_seed_platform_offers_every_model_that_fits_the_small_ones_always_on(catalog):
    call_command("seed_platform", stdout=io.StringIO())
    call_command("seed_platform", stdout=io.StringIO())  # idempotent
    platform = Organization.objects.get(namespace="public")
    services = {s.catalog_model.slug: s for s in Service.objects.for_org(platform).select_related("catalog_model")}
    # Every listed model but the two that need more than one node of 8× 80 GB (8× 141 GB or two nodes).
    assert set(services) == set(CatalogModel.objects.filter(listed=True).values_list("slug", flat=True)) - {
        "deepseek-r1",
        "deepseek-v3",
    }
    on = {slug for slug, s in services.items() if s.min_instances == 1}
    assert on == {"qwen2-0.5b-instruct", "qwen2.5-7b-instruct", "bge-m3"}
    for slug, service in services.items():
        assert service.scaling_mode == ScalingMode.AUTOSCALE
        if slug not in on:
            assert (service.status, service.instances, service.min_instances) == (ServiceStatus.IDLE, 0, 0)
    for service in services.values():
        local.stop_all(service)
