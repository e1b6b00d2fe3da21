"""Wake on request, end to end: the official openai SDK against a uvicorn gateway, services on the local driver
(engine simulator processes with a start-up time), and this test standing in for the autoscaler's loop (it calls
``deployments.services.wake_pending`` and runs reconcile passes, as the scaler's loop and Celery would)."""

from __future__ import annotations

import signal
import threading
import time
from decimal import Decimal

import httpx
import openai
import pytest
from django.db import connection

from billing.models import LedgerEntry
from billing.services.usage_charges import usage_charge_pending
from deployments import reconcile
from deployments.drivers import local
from deployments.models import EventKind, Replica, ScalingMode, Service, ServiceStatus
from deployments.services import local_cluster_create, public_service_create, wake_pending
from deployments.serving_signals import signals_read, wake_key
from gateway import admission
from gateway.store import sredis
from metering import ingestion, open_requests
from metering.models import UsageRecord
from tests.factories import RegionFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHAT = [{"role": "user", "content": "Hello after a nap."}]
STARTUP_S = Decimal("2.5")


@pytest.fixture
def local_region(transactional_db, catalog):
    region = RegionFactory(code="cn-shanghai-2", name_zh="上海二区", name_en="Shanghai 2", position=10)
    local_cluster_create(name="local", region=region)
    return region


@pytest.fixture
def idle_public(public_org, local_region):
    """``public/qwen2-0.5b-instruct``, created Idle (autoscale, minimum 0) as seed_platform creates the large ones."""
    from catalog.models import CatalogModel

    model = CatalogModel.objects.get(slug="qwen2-0.5b-instruct")
    service = public_service_create(
        org=public_org,
        catalog_model=model,
        region=local_region,
        name="qwen2-0-5b-instruct",
        min_instances=0,
        max_instances=1,
    )
    service = _pass(service.pk)
    assert service.status == ServiceStatus.IDLE
    yield service
    local.stop_all(service)


@pytest.fixture
def idle_own(org, local_region):
    """``acme/napper``: the org's own service, autoscaling with minimum 0, scaled to zero."""
    from catalog.models import CatalogModel
    from deployments.services import service_create

    model = CatalogModel.objects.get(slug="qwen2-0.5b-instruct")
    service = service_create(org=org, actor=None, catalog_model=model, region=local_region, name="napper")
    # As the autoscaler scales a service to zero (the scaler's own code does this with its timeline entry).
    Service.objects.filter(pk=service.pk).update(
        scaling_mode=ScalingMode.AUTOSCALE, min_instances=0, max_instances=2, instances=0
    )
    service = _pass(service.pk)
    assert service.status == ServiceStatus.IDLE
    yield service
    local.stop_all(service)


def _pass(service_id) -> Service:
    reconcile.reconcile_service(service_id)
    return Service.objects.get(pk=service_id)


class Autoscaler:
    """The part of the autoscaler's loop this feature needs: wake what held requests ask for, and reconcile
    passes for the woken services until they run (Celery's polling, sped up)."""

    def __init__(self):
        self.stop = threading.Event()
        self.woken: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            while not self.stop.is_set():
                self.woken += wake_pending()
                for service_id in set(self.woken):
                    if Service.objects.get(pk=service_id).status != ServiceStatus.RUNNING:
                        reconcile.reconcile_service(service_id)
                time.sleep(0.1)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def slow_engines(settings):
    settings.LOCAL_ENGINE_STARTUP_S = STARTUP_S


def _held(service) -> int:
    return signals_read([service.pk])[str(service.pk)].held


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_first_request_after_idle_wakes_the_public_model_and_is_answered(v1, api_key, idle_public, slow_engines):
    client = openai.OpenAI(base_url=v1, api_key=api_key, max_retries=0, timeout=60)
    with Autoscaler() as scaler:
        started = time.monotonic()
        answer = client.chat.completions.create(model="public/qwen2-0.5b-instruct", messages=CHAT, max_tokens=8)
        waited = time.monotonic() - started
    assert answer.model == "public/qwen2-0.5b-instruct" and answer.choices[0].message.content
    assert waited >= float(STARTUP_S)  # it did wait for the engine to load, and was then sent
    assert scaler.woken == [str(idle_public.pk)]
    service = Service.objects.get(pk=idle_public.pk)
    assert service.status == ServiceStatus.RUNNING and service.instances == 1
    woken = service.events.get(reason="Woken", kind=EventKind.SCALE)
    assert woken.message == "0 → 1: woken by a request"
    assert _until(lambda: _held(service) == 0)
    # Awake, the next request goes straight through.
    assert client.chat.completions.create(model="public/qwen2-0.5b-instruct", messages=CHAT, max_tokens=4).choices


def test_the_first_request_after_a_scale_to_zero_wakes_the_service_again(run_gateway, api_key, idle_own, slow_engines):
    """The gateway's worker still caches the stopped instance (its list is refreshed while served after a change):
    refused there, the request is held and the service woken again, not answered 503."""
    from deployments.services import service_autoscale
    from deployments.texts import TIMELINE

    with run_gateway() as url, Autoscaler() as scaler:
        client = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=60)
        assert client.chat.completions.create(model="acme/napper", messages=CHAT, max_tokens=4).choices
        first = Replica.objects.get(service=idle_own)
        service_autoscale(service_id=idle_own.pk, instances=0, message=TIMELINE("autoscale_idle", a=1, n=1))
        assert _until(lambda: not local.process_alive(first.pid, port=first.port), timeout=20)
        assert _until(lambda: Service.objects.get(pk=idle_own.pk).status == ServiceStatus.IDLE)
        answer = client.chat.completions.create(model="acme/napper", messages=CHAT, max_tokens=4)
    assert answer.choices[0].message.content
    assert scaler.woken == [str(idle_own.pk)] * 2
    assert idle_own.events.filter(kind=EventKind.SCALE, reason="Woken").count() == 2


class Recording(httpx.HTTPTransport):
    """An httpx transport that keeps every body chunk the server sent (to see what the SDK was given)."""

    def __init__(self):
        super().__init__()
        self.chunks: list[bytes] = []

    def handle_request(self, request):
        response = super().handle_request(request)
        inner, chunks = response.stream, self.chunks

        class Stream(httpx.SyncByteStream):
            def __iter__(self):
                for chunk in inner:
                    chunks.append(chunk)
                    yield chunk

            def close(self):
                inner.close()

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Stream(), extensions=response.extensions
        )


def test_first_stream_after_idle_survives_the_keep_alive_comments(run_gateway, api_key, idle_own, slow_engines):
    recording = Recording()
    with run_gateway(GATEWAY_WAKE_KEEPALIVE_S="1") as url, Autoscaler():
        client = openai.OpenAI(
            base_url=url + "/v1", api_key=api_key, max_retries=0, http_client=httpx.Client(transport=recording)
        )
        stream = client.chat.completions.create(
            model="acme/napper", messages=CHAT, max_tokens=6, stream=True, extra_body={"ignore_eos": True}
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    raw = b"".join(recording.chunks)
    assert raw.startswith(b": waking\n\n") and raw.count(b": waking\n\n") >= 2  # start-up 2.5 s, a comment a second
    assert b"data: [DONE]" in raw
    assert _until(lambda: _held(idle_own) == 0)


def test_a_wake_past_the_longest_wait_answers_503_with_retry_after_and_charges_nothing(v1, api_key, idle_public, org):
    idle_public.max_wake_wait_s = 1
    idle_public.save(update_fields=["max_wake_wait_s"])  # the serving epoch tells the gateway
    balance = Decimal("50")
    admission.publish_balance(org.pk, balance)
    sredis().delete(wake_key())
    client = openai.OpenAI(base_url=v1, api_key=api_key, max_retries=0)
    time.sleep(1.0)  # the gateway's cached target follows the change within a second
    with pytest.raises(openai.APIStatusError) as caught:  # nobody wakes it: the wait ends
        client.chat.completions.create(model="public/qwen2-0.5b-instruct", messages=CHAT, max_tokens=8)
    error = caught.value
    assert error.status_code == 503 and error.body["code"] == "service_unavailable"
    assert error.body["type"] == "server_error" and "nothing was charged" in error.body["message"]
    assert int(error.response.headers["retry-after"]) > 0
    assert sredis().sismember(wake_key(), str(idle_public.pk))  # it asked for the wake
    assert _held(idle_public) == 0
    assert admission.published_balance(org.pk) == balance  # the reservation went back whole (a slice stays held)
    assert _until(lambda: sredis().xlen(ingestion.stream_key()) >= 1)
    ingestion.ingest_all()
    record = UsageRecord.objects.get(org=org)
    assert (record.http_status, record.error_code, record.cost or 0) == (503, "service_unavailable", 0)
    usage_charge_pending()
    assert not LedgerEntry.objects.filter(org=org).exists()


def test_the_held_counter_is_exact_when_the_client_gives_up(v1, api_key, idle_public):
    def give_up():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                v1 + "/chat/completions",
                headers={"Authorization": f"Bearer {api_key}"},
                json={"model": "public/qwen2-0.5b-instruct", "messages": CHAT, "max_tokens": 4},
                timeout=httpx.Timeout(5, read=1.5),
            )

    clients = [threading.Thread(target=give_up) for _ in range(3)]
    for thread in clients:
        thread.start()
    assert _until(lambda: _held(idle_public) == 3)  # nobody wakes it here: they all wait
    for thread in clients:
        thread.join()
    assert _until(lambda: _held(idle_public) == 0)  # each one's hold ended with its client


def test_models_list_their_state(v1, api_key, idle_public, idle_own, public_model):
    client = openai.OpenAI(base_url=v1, api_key=api_key)
    states = {m.id: m.model_extra["status"] for m in client.models.list()}
    assert states == {"public/qwen2-0.5b-instruct": "idle", "acme/napper": "idle", "public/tiny-chat": "ready"}
    idle_public.status, idle_public.instances = ServiceStatus.STARTING, 1
    idle_public.save(update_fields=["status", "instances"])
    assert _until(lambda: client.models.retrieve("public/qwen2-0.5b-instruct").model_extra["status"] == "starting")
    assert not Replica.objects.filter(service=idle_public).exists()
    assert idle_public.events.filter(kind=EventKind.METER).count() == 0


def test_a_killed_workers_held_requests_are_taken_back_by_the_sweeper(run_gateway, api_key, idle_public, settings):
    """SIGKILL of a gateway worker holding requests for a waking service: the sweeper returns ``held`` to the truth."""
    settings.USAGE_OPEN_GRACE_SECONDS = 1

    def wait(url):
        try:
            httpx.post(
                url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {api_key}"},
                json={"model": "public/qwen2-0.5b-instruct", "messages": CHAT, "max_tokens": 4},
                timeout=httpx.Timeout(5, read=20),
            )
        except httpx.HTTPError:
            pass  # the worker died under it

    with run_gateway(with_process=True, USAGE_OPEN_GRACE_SECONDS="1") as (url, process):
        clients = [threading.Thread(target=wait, args=(url,), daemon=True) for _ in range(2)]
        for thread in clients:
            thread.start()
        assert _until(lambda: _held(idle_public) == 2)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    time.sleep(1.5)  # the killed worker's heartbeat is now older than the grace
    assert _held(idle_public) == 2  # nothing took them back yet
    open_requests.open_requests_sweep()
    assert _held(idle_public) == 0
