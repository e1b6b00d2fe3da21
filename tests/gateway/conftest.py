"""Gateway fixtures: uvicorn servers running ``maas.asgi:application`` on the test database, engine simulators as
replicas, public and dedicated models, and keys."""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import date
from decimal import Decimal

import pytest
from django.conf import settings

from catalog.models import CatalogModel
from deployments.models import PUBLIC_NAMESPACE, Region, Replica, Service, ServiceStatus
from gateway.store import sredis
from tenancy.services import apikey_create
from tests.factories import OrganizationFactory
from tests.support.servers import free_port, run_asgi, subprocess_database_url  # noqa: F401

# Keys of this run apart from other runs sharing the Redis; the servers get the same prefix.
PREFIX = f"test-gw-{os.getpid()}:"
settings.GATEWAY_REDIS_PREFIX = PREFIX
# Billing may or may not be installed: balances here are only what a test publishes (otherwise unlimited).
NO_LOADER = "tests.gateway.no_such_module.balance"
SERVER_ENV = {
    "GATEWAY_BREAKER_COOLDOWN": "1",
    "GATEWAY_IDLE_TIMEOUT": "10",
    "GATEWAY_CONNECT_TIMEOUT": "2",
    "MAAS_BALANCE_LOADER": NO_LOADER,
}


def database_url() -> str:
    return subprocess_database_url()


@contextmanager
def run_gateway(http: str = "httptools", **env):
    """uvicorn serving maas.asgi:application on a free port, on the test database; yields its base URL."""
    with run_asgi(
        env={"GATEWAY_REDIS_PREFIX": PREFIX, **SERVER_ENV, **env},
        ready_path="/v1/models",
        ready_status=401,
        extra_args=("--loop", "uvloop", "--http", http),
    ) as url:
        yield url


@pytest.fixture(scope="session")
def gateway_url(django_db_setup):
    with run_gateway() as url:
        yield url


@pytest.fixture(autouse=True)
def _no_balance_loader():
    """In-process gateway calls of these tests see no billing loader; other test packages keep the real one."""
    previous = settings.MAAS_BALANCE_LOADER
    settings.MAAS_BALANCE_LOADER = NO_LOADER
    yield
    settings.MAAS_BALANCE_LOADER = previous


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    yield
    client = sredis()
    for key in client.scan_iter(match=PREFIX + "*", count=1000):
        client.delete(key)


@pytest.fixture
def v1(gateway_url):
    return gateway_url + "/v1"


TRANSPORTS = ("fast", "plain")


@pytest.fixture(params=TRANSPORTS)
def transport(request, settings):
    """In-process gateway calls of a test, once on each GATEWAY_TRANSPORT path."""
    settings.GATEWAY_TRANSPORT = request.param
    return request.param


@pytest.fixture(scope="session")
def plain_gateway_url(django_db_setup):
    with run_gateway(GATEWAY_TRANSPORT="plain") as url:
        yield url


@pytest.fixture(params=TRANSPORTS)
def any_v1(request):
    """The /v1 base URL of a gateway server on each GATEWAY_TRANSPORT path (fast, then plain)."""
    return request.getfixturevalue("gateway_url" if request.param == "fast" else "plain_gateway_url") + "/v1"


def make_catalog_model(slug: str, *, input_price="0.002", output_price="0.006") -> CatalogModel:
    return CatalogModel.objects.create(
        slug=slug,
        name=slug,
        display_name=slug,
        publisher="test",
        description_zh="测试",
        description_en="test",
        tasks=["chat"],
        parameters_b=Decimal("0.5"),
        context_length=8192,
        quantization="bf16",
        license="apache-2.0",
        source_hub="huggingface",
        source_repo=f"test/{slug}",
        currency="CNY",
        input_price_per_1k=Decimal(input_price),
        output_price_per_1k=Decimal(output_price),
        spec_updated=date(2026, 11, 1),
        spec_file=f"{slug}.yaml",
        spec_hash="0" * 64,
    )


def make_service(*, org, model: CatalogModel, name: str, replicas: list[str], status=ServiceStatus.RUNNING) -> Service:
    region, _ = Region.objects.get_or_create(code="cn-test-1", defaults={"name_zh": "测试一区", "name_en": "Test 1"})
    service = Service.objects.create(
        org=org,
        name=name,
        catalog_model=model,
        region=region,
        variant_position=0,
        runtime="vllm",
        runtime_version="0.10.2",
        image="vllm/vllm-openai:v0.10.2",
        gpu_product="NVIDIA-H100",
        gpu_count=1,
        per_gpu_memory_gb=80,
        cpu=8,
        memory_gb=64,
        max_model_len=8192,
        replicas=len(replicas) or 1,
        ready_replicas=len(replicas),
        hourly_price=Decimal("12.50"),
        currency="CNY",
        status=status,
    )
    for i, base_url in enumerate(replicas):
        Replica.objects.create(service=service, name=f"{name}-{i}", base_url=base_url, ready=True)
    return service


@pytest.fixture
def simulator():
    from simulator import run_simulator

    with run_simulator(
        served_model_names=("public/qwen-small", "acme/my-llama", "rival/their-llama"), ttft_ms=2, itl_ms=1
    ) as base_url:
        yield base_url


@pytest.fixture
def public_org(transactional_db):
    return OrganizationFactory(name="Platform", namespace=PUBLIC_NAMESPACE)


@pytest.fixture
def public_model(public_org, simulator):
    """``public/tiny-chat`` served by the platform's ``public/qwen-small`` deployment (priced per token)."""
    model = make_catalog_model("tiny-chat")
    return make_service(org=public_org, model=model, name="qwen-small", replicas=[simulator])


@pytest.fixture
def org_service(org, simulator):
    """The org's dedicated ``acme/my-llama``."""
    model = make_catalog_model("llama-dedicated")
    return make_service(org=org, model=model, name="my-llama", replicas=[simulator])


@pytest.fixture
def api_key(org):
    _key, raw = apikey_create(org=org, name="tests")
    return raw


@pytest.fixture
def key_row(org):
    key, raw = apikey_create(org=org, name="tests")
    key.raw = raw
    return key
