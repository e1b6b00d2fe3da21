"""The autoscaler loop (``deployments.autoscaler``) on real PostgreSQL and Redis: one leader among two loops, a
standby taking over, wake requests acted on at once, decisions written through the reconcile path (local processes
scaled 1 → 2 → 1 with the leaving instance drained, Idle at zero and woken; a Kubernetes Deployment's replicas on the
test API server), and a scale-up without GPUs said on the service and retried with backoff."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from core import redis as platform_redis
from deployments import serving_signals
from deployments.autoscaler import Autoscaler, leader_key
from deployments.autoscaling import PANIC_HOLD_S
from deployments.drivers import local
from deployments.models import EventKind, Replica, ScalingMode, Service, ServiceStatus
from deployments.replica_metrics import Scraper
from deployments.selectors import ready_endpoints
from deployments.services import service_create
from tests.deployments.helpers import meters, passes, qwen

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _clean_signals():
    client = platform_redis.client()
    client.delete(leader_key(), serving_signals.wake_key(), serving_signals.wake_notify_key())
    yield
    client.delete(leader_key(), serving_signals.wake_key(), serving_signals.wake_notify_key())


def _demand(service, inflight: int, *, last: float | None = None) -> None:
    """What the gateway writes for a service (``gateway.serving``): its in-flight count and last arrival."""
    fields = {"inflight": inflight, "last_ms": int((last or time.time()) * 1000)}
    platform_redis.client().hset(serving_signals.signal_key(service.pk), mapping=fields)


def _autoscale(service, **policy) -> Service:
    values = {"scaling_mode": ScalingMode.AUTOSCALE, "min_instances": 1, "max_instances": 4, "target_value": 8}
    Service.objects.filter(pk=service.pk).update(**{**values, **policy})
    return Service.objects.get(pk=service.pk)


def _until(service, predicate, timeout: float = 30.0) -> Service:
    deadline = time.monotonic() + timeout
    while True:
        service = passes(service)
        if predicate(service):
            return service
        if time.monotonic() > deadline:
            raise AssertionError(f"still {service.status} {service.ready_instances}/{service.instances}")
        time.sleep(0.2)


@pytest.fixture
def tiny(org, alice, catalog, local_cluster, region):
    service = service_create(
        org=org, actor=alice, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name="tiny"
    )
    yield service
    local.stop_all(service)


def test_one_of_two_loops_leads_and_a_standby_takes_over_when_it_dies():
    first, second = Autoscaler(tick_s=0.3, name="first"), Autoscaler(tick_s=0.3, name="second")
    assert first.lead() and not second.lead()
    assert first.lead() and not second.lead()  # renewed
    # The leader dies (stops renewing): its lease runs out and the standby takes over.
    time.sleep(1.1)
    assert second.lead() and not first.lead()
    second.resign()
    assert first.lead()
    first.resign()


def test_two_running_loops_decide_once(tiny):
    service = _autoscale(tiny)
    _demand(service, 12)
    loops = [Autoscaler(tick_s=0.2, name=name) for name in ("a", "b")]
    stop = threading.Event()
    threads = [threading.Thread(target=loop.run, args=(stop.is_set,), daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(5)
    service.refresh_from_db()
    assert service.instances == 2
    scaled = service.events.filter(kind=EventKind.SCALE, reason="Autoscaled")
    assert [e.message for e in scaled] == ["1 → 2: 12 requests in flight or waiting, target 8 per instance"]
    assert sum(loop.leading for loop in loops) == 0  # both resigned on the way out
    assert not platform_redis.client().exists(leader_key())


def test_a_wake_request_is_acted_on_at_once_not_at_the_next_tick(tiny):
    service = _autoscale(tiny, min_instances=0, instances=0, status=ServiceStatus.IDLE)
    loop = Autoscaler(tick_s=30)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop.is_set,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not loop.leading and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the first tick is done: the loop waits on wake:notify for the next 30 s
    client = platform_redis.client()
    asked = time.monotonic()
    client.sadd(serving_signals.wake_key(), str(service.pk))  # what a held request does
    client.lpush(serving_signals.wake_notify_key(), "1")
    while Service.objects.get(pk=service.pk).instances == 0 and time.monotonic() - asked < 5:
        time.sleep(0.01)
    waited = time.monotonic() - asked
    stop.set()
    client.lpush(serving_signals.wake_notify_key(), "stop")  # end the wait at once
    thread.join(5)
    service.refresh_from_db()
    assert service.instances == 1 and service.status == ServiceStatus.STARTING
    assert waited < 1.0
    assert service.events.filter(reason="Woken", message="0 → 1: woken by a request").exists()


def test_a_wake_request_is_acted_on_at_once_after_a_wait_longer_than_redis_s_read_timeout(tiny, caplog):
    service = _autoscale(tiny, min_instances=0, instances=0, status=ServiceStatus.IDLE)
    loop = Autoscaler(tick_s=30)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop.is_set,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not loop.leading and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(5.5)  # longer than redis-py's 5 s socket timeout: one BLPOP of the whole tick would have failed
    client = platform_redis.client()
    asked = time.monotonic()
    client.sadd(serving_signals.wake_key(), str(service.pk))
    client.lpush(serving_signals.wake_notify_key(), "1")
    while Service.objects.get(pk=service.pk).instances == 0 and time.monotonic() - asked < 5:
        time.sleep(0.01)
    waited = time.monotonic() - asked
    stop.set()
    thread.join(5)
    assert Service.objects.get(pk=service.pk).instances == 1
    assert "cannot wait on Redis" not in caplog.text
    assert waited < 0.5


def test_local_service_scales_one_two_one_and_the_leaving_instance_finishes_its_stream(tiny, settings):
    settings.SERVICE_DRAIN_GRACE_S = 60
    service = _until(tiny, lambda s: s.status == ServiceStatus.RUNNING)
    service = _autoscale(service, scale_down_window_s=2)
    clock = Clock()
    loop = Autoscaler(tick_s=1, clock=clock)
    assert loop.lead()

    _demand(service, 12, last=clock.now)
    loop.tick()
    service = _until(service, lambda s: s.status == ServiceStatus.RUNNING and s.ready_instances == 2)
    assert service.instances == 2
    leaving = Replica.objects.get(service=service, name="svc-tiny-1")

    # A long stream on the instance that will leave, and the scraper sees it running there.
    received: list[str] = []

    def stream() -> None:
        body = {
            "model": "acme/tiny",
            "messages": [{"role": "user", "content": "tell"}],
            "max_tokens": 150,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", leaving.base_url + "/v1/chat/completions", json=body, timeout=60) as answer:
            for text in answer.iter_text():
                received.append(text)

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert Scraper().scrape([str(service.pk)])[str(service.pk)].running >= 1

    # Demand falls to the one stream (the gateway says nothing, the replicas' /metrics say 1 running): after the
    # stabilisation window, 2 → 1.
    _demand(service, 0, last=clock.now)
    clock.now += 1
    loop.tick()
    assert Service.objects.get(pk=service.pk).instances == 2  # not a whole window yet
    clock.now += 3
    loop.tick()
    service.refresh_from_db()
    assert service.instances == 1
    reason = "2 → 1: at most 1 requests in flight or waiting for 2 s, target 8 per instance"
    assert service.events.filter(reason="Autoscaled", message=reason).exists()

    # The leaving instance drains: no longer routed to, still running its stream.
    service = passes(service)
    leaving.refresh_from_db()
    assert leaving.draining_since is not None
    assert [e.replica for e in ready_endpoints([str(service.pk)])] == ["svc-tiny-0"]
    assert local.process_alive(leaving.pid, port=leaving.port)
    assert service.status == ServiceStatus.SCALING

    reader.join(30)
    assert "data: [DONE]" in "".join(received)  # the stream was finished, not cut
    service = _until(service, lambda s: s.status == ServiceStatus.RUNNING)
    assert not Replica.objects.filter(pk=leaving.pk).exists()
    assert not local.process_alive(leaving.pid, port=leaving.port)
    assert meters(service) == [1, 2, 1]
    loop.resign()


def test_an_idle_service_goes_to_zero_is_not_billed_and_wakes(tiny):
    service = _until(tiny, lambda s: s.status == ServiceStatus.RUNNING)
    service = _autoscale(service, min_instances=0, idle_to_zero_s=60)
    clock = Clock()
    loop = Autoscaler(tick_s=1, clock=clock)
    assert loop.lead()
    _demand(service, 0, last=clock.now - 600)
    loop.tick()
    service.refresh_from_db()
    assert service.instances == 0
    assert service.events.filter(reason="ScaledToZero", message="1 → 0: idle 10 min").exists()
    service = _until(service, lambda s: s.status == ServiceStatus.IDLE)
    assert service.ready_instances == 0 and service.billed_instances == 0
    assert not Replica.objects.filter(service=service).exists()
    assert meters(service)[-1] == 0

    # A request arrives (the gateway counts it): woken, Starting, then Running.
    _demand(service, 1, last=clock.now)
    clock.now += 1
    loop.tick()
    service = passes(service)
    assert service.instances == 1 and service.status == ServiceStatus.STARTING
    service = _until(service, lambda s: s.status == ServiceStatus.RUNNING)
    assert meters(service)[-1] == 1
    loop.resign()


def test_a_scale_up_without_gpus_says_so_retries_with_backoff_and_never_flaps(tiny):
    service = _autoscale(tiny, max_instances=20)
    clock = Clock()
    loop = Autoscaler(tick_s=5, clock=clock)
    assert loop.lead()
    _demand(service, 100, last=clock.now)  # 13 instances: the local cluster has 8 GPUs
    loop.tick()
    service.refresh_from_db()
    assert service.instances == 1
    assert service.status_reason == "NoCapacityToScale"
    assert service.status_message.startswith("cannot add instances (1 → 13): Not enough free GPUs")
    assert service.status_message.endswith("trying again in 5 seconds")
    events = service.events.count()
    clock.now += 1
    loop.tick()  # within the backoff: not tried again, nothing written
    assert service.events.count() == events
    clock.now += 5
    loop.tick()  # tried again, refused again: the backoff doubles
    service.refresh_from_db()
    assert service.instances == 1 and service.status_message.endswith("trying again in 10 seconds")
    # A reconcile pass keeps the words; demand that fits clears them.
    assert passes(service).status_reason == "NoCapacityToScale"
    _demand(service, 4, last=clock.now)
    clock.now += 1
    loop.tick()
    service.refresh_from_db()
    assert service.status_reason == "" and service.instances == 1
    assert not service.events.filter(kind=EventKind.SCALE, reason="Autoscaled").exists()
    loop.resign()


def test_kubernetes_deployment_replicas_follow_the_decision(org, alice, catalog, kube_cluster, region, kube_api):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat")
    service = passes(service)
    kube_api.mark_ready("maas-acme", "svc-chat")
    service = passes(service)
    assert service.status == ServiceStatus.RUNNING
    service = _autoscale(service, min_instances=0)
    clock = Clock()
    loop = Autoscaler(tick_s=1, clock=clock)
    assert loop.lead()
    _demand(service, 20, last=clock.now)
    loop.tick()
    service = passes(service)
    deployment = kube_api.get("deployments", "maas-acme", "svc-chat", group="apps")
    assert service.instances == 3 and deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][:2] == ["python3", "-c"]  # drains
    assert pod["terminationGracePeriodSeconds"] > 300
    _demand(service, 0, last=clock.now - 3600)
    clock.now += PANIC_HOLD_S + 1  # the burst's hold on scale-down is over
    loop.tick()
    service = passes(service)
    deployment = kube_api.get("deployments", "maas-acme", "svc-chat", group="apps")
    assert service.instances == 0 and deployment["spec"]["replicas"] == 0
    assert service.billed_instances == 0
    loop.resign()
