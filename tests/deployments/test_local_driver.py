"""The local driver: real simulator processes reach Running, dead ones are restarted, stop/delete end them."""

import io
import os
import signal
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from deployments.drivers import local
from deployments.models import Cluster, EventKind, Region, Replica, Service, ServiceStatus
from deployments.services import service_create, service_delete, service_stop
from tenancy.models import Organization
from tests.deployments.helpers import meters, passes, qwen, statuses

pytestmark = pytest.mark.django_db


def until_running(service, timeout=20.0) -> Service:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service = passes(service)
        if service.status == ServiceStatus.RUNNING:
            return service
        time.sleep(0.2)
    raise AssertionError(f"still {service.status}: {service.status_message}")


@pytest.fixture
def running(org, alice, catalog, local_cluster, region):
    service = service_create(
        org=org, actor=alice, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name="tiny"
    )
    yield service
    local.stop_all(service)


def test_local_service_reaches_running_and_answers_as_its_model_id(running):
    service = until_running(running)
    replica = Replica.objects.get(service=service)
    assert replica.ready and replica.pid and replica.base_url == f"http://127.0.0.1:{replica.port}"
    models = httpx.get(f"{replica.base_url}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["acme/tiny"]
    assert statuses(service)[0] == "Pending" and statuses(service)[-1] == "Running"
    assert meters(service) == [1]


def test_a_killed_process_is_restarted_and_a_live_one_readopted(running):
    service = until_running(running)
    first = Replica.objects.get(service=service)
    passes(service)  # re-adopts: same pid, nothing restarted
    assert Replica.objects.get(service=service).pid == first.pid
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(0.3)
    service = passes(service)
    assert service.events.filter(reason="ProcessRestarted").exists()
    service = until_running(service)
    assert Replica.objects.get(service=service).pid != first.pid


def test_stop_and_delete_end_the_processes(running, alice):
    service = until_running(running)
    pid, port = Replica.objects.values_list("pid", "port").get(service=service)
    service_stop(service=service, actor=alice)
    service = passes(service)
    assert service.status == ServiceStatus.STOPPED and not local.process_alive(pid, port=port)
    service_delete(service=service, actor=alice)
    assert passes(service).status == ServiceStatus.DELETED
    assert meters(service) == [1, 0]


def test_the_simulator_gets_the_vllm_options_it_simulates_and_skips_the_others():
    runtime_args = ["--trust-remote-code", "--max-num-seqs", "8", "--block-size=32", "--enable-chunked-prefill"]
    command = local.engine_command(
        served_model_name="acme/tiny",
        model_source="Qwen/x",
        max_model_len=4096,
        port=9,
        replica="tiny-0",
        runtime_args=runtime_args,
    )
    assert command[1:3] == ["-m", "simulator"]
    assert command[-3:] == ["--max-num-seqs", "8", "--block-size=32"]
    assert "--trust-remote-code" not in command and "--enable-chunked-prefill" not in command


def test_a_local_service_s_concurrency_limit_reaches_its_simulator(running):
    Service.objects.filter(pk=running.pk).update(runtime_args=["--enable-chunked-prefill", "--max-num-seqs", "3"])
    service = until_running(running)
    replica = Replica.objects.get(service=service)
    assert httpx.get(f"{replica.base_url}/_sim/config", timeout=5).json()["max_num_seqs"] == 3


def test_local_inventory_tracks_allocations(org, alice, catalog, local_cluster, region):
    service_create(org=org, actor=alice, catalog_model=qwen("bge-m3"), region=region, name="emb", instances=3)
    local_cluster.refresh_from_db()
    entry = local_cluster.inventory[local.LOCAL_GPU_PRODUCT]
    assert (entry["total"], entry["allocated"], entry["free"]) == (8, 3, 5)


def test_seed_platform_is_idempotent(catalog, django_user_model):
    # As after seed_demo: a platform admin exists, and is no member of the platform org (the services are still made).
    django_user_model.objects.create_superuser(username="root", email="root@example.com", password="x")
    for _ in range(2):
        call_command("seed_platform", stdout=io.StringIO())
    assert list(Region.objects.values_list("code", "name_zh")) == [
        ("cn-shanghai-2", "上海二区"),
        ("cn-beijing-1", "北京一区"),
    ]
    cluster = Cluster.objects.get()
    assert (cluster.name, cluster.driver, cluster.region.code) == ("local", "local", "cn-shanghai-2")
    platform = Organization.objects.get(namespace="public")
    assert platform.name == "Platform"
    # The small ones run; every other model that fits is there at zero instances (tests/deployments/test_wake.py).
    assert sorted(
        Service.objects.for_org(platform).exclude(status="Idle").values_list("catalog_model__slug", flat=True)
    ) == [
        "bge-m3",
        "qwen2-0.5b-instruct",
        "qwen2.5-7b-instruct",
    ]


def meter_timeline(service: Service) -> list[tuple[object, int]]:
    return list(
        service.events.filter(kind=EventKind.METER)
        .order_by("created_at", "id")
        .values_list("created_at", "billable_instances")
    )


def test_platform_shutdown_stops_local_processes_and_the_next_pass_restarts_them(running):
    service = until_running(running)
    first = Replica.objects.get(service=service)
    stopping = timezone.now()
    assert local.stop_machine_processes() == 1
    stopped = timezone.now()
    assert not local.process_alive(first.pid, port=first.port)
    assert Replica.objects.filter(service=service).exists()  # rows stay for the next start
    with time_machine.travel(stopped + timedelta(seconds=40), tick=True):  # started again 40 s later
        service = until_running(passes(service))
    assert local.process_alive(Replica.objects.get(service=service).pid, port=Replica.objects.get(service=service).port)
    (_, up), (closed_at, down), (again, up_again) = meter_timeline(service)
    # The instance is billed until the platform stopped it, not until the next start found it gone.
    assert (up, down, up_again) == (1, 0, 1)
    assert stopping <= closed_at <= stopped and again >= stopped + timedelta(seconds=40)


def test_instances_that_died_with_the_platform_are_not_billed_while_it_was_down(running):
    """Ctrl-C and a restart 40 s later: the 40 s with no process were billed as running instances."""
    from billing.services import service_settle

    service = passes(until_running(running))  # a reconcile heartbeat
    heartbeat = service.last_reconciled_at
    row = Replica.objects.get(service=service)
    os.kill(row.pid, signal.SIGKILL)  # the machine went down with the platform: nothing saw the process end
    time.sleep(0.3)
    with time_machine.travel(heartbeat + timedelta(seconds=40), tick=True):
        service = until_running(passes(service))
        assert service.events.filter(reason="ProcessRestarted").exists()
        (started, up), (closed_at, down), (again, up_again) = meter_timeline(service)
        assert (up, down, up_again) == (1, 0, 1) and closed_at == heartbeat
        charged = service_settle(service_id=service.pk)
    service.refresh_from_db()
    billed = sum(Decimal(e.data["instance_seconds"]) for e in charged)
    ran = (heartbeat - started) + (service.last_reconciled_at - again)
    assert billed == Decimal(ran // timedelta(microseconds=1)) / 1_000_000
