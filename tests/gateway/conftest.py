"""Gateway fixtures: uvicorn servers running ``maas.asgi:application`` on the test database, engine simulators as
replicas, public and dedicated models, and keys."""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
from django.conf import settings

from catalog.models import CatalogModel
from deployments.models import PUBLIC_NAMESPACE, Service, ServiceStatus
from gateway.store import sredis
from tenancy.services import apikey_create
from tests.factories import CatalogModelFactory, OrganizationFactory, ServiceFactory
from tests.support import servers

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


@contextmanager
def gateway_server(http: str = "httptools", with_process: bool = False, **env):
    """uvicorn serving maas.asgi:application on a free port, on the test database; yields its base URL (with
    ``with_process``: the URL and the server's ``Popen``)."""
    with servers.run_asgi(
        env={"GATEWAY_REDIS_PREFIX": PREFIX, **SERVER_ENV, **env},
        ready_path="/v1/models",
        ready_status=401,
        extra_args=("--loop", "uvloop", "--http", http),
        with_process=with_process,
    ) as url:
        yield url


@pytest.fixture(scope="session")
def gateway_url(django_db_setup):
    with gateway_server() as url:
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


@pytest.fixture
def run_gateway():
    """Another gateway server process, for tests about state shared between workers: ``with run_gateway() as url``."""
    return gateway_server


TRANSPORTS = ("fast", "plain")


@pytest.fixture(params=TRANSPORTS)
def transport(request, settings):
    """In-process gateway calls of a test, once on each GATEWAY_TRANSPORT path."""
    settings.GATEWAY_TRANSPORT = request.param
    return request.param


@pytest.fixture(scope="session")
def plain_gateway_url(django_db_setup):
    with gateway_server(GATEWAY_TRANSPORT="plain") as url:
        yield url


@pytest.fixture(params=TRANSPORTS)
def any_v1(request):
    """The /v1 base URL of a gateway server on each GATEWAY_TRANSPORT path (fast, then plain)."""
    return request.getfixturevalue("gateway_url" if request.param == "fast" else "plain_gateway_url") + "/v1"


@pytest.fixture
def free_port():
    """A port nothing listens on (for a replica that refuses connections)."""
    return servers.free_port


def _make_catalog_model(slug: str) -> CatalogModel:
    return CatalogModelFactory(slug=slug)


def _make_service(*, org, model: CatalogModel, name: str, replicas: list[str], status=ServiceStatus.RUNNING) -> Service:
    return ServiceFactory(
        org=org,
        catalog_model=model,
        name=name,
        instances=len(replicas) or 1,
        ready_instances=len(replicas),
        status=status,
        replica_urls=replicas,
    )


@pytest.fixture
def make_catalog_model():
    """``make_catalog_model(slug)``: a chat model priced per token (0.002 in, 0.006 out per 1K)."""
    return _make_catalog_model


@pytest.fixture
def make_service():
    """``make_service(org=, model=, name=, replicas=[base_url, ...])``: a running service with a ready replica each."""
    return _make_service


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
    model = _make_catalog_model("tiny-chat")
    return _make_service(org=public_org, model=model, name="qwen-small", replicas=[simulator])


@pytest.fixture
def public_embedding_model(public_org):
    """``public/tiny-embed``, an embedding model (catalog task ``embedding``) of the platform, priced per token."""
    from simulator import run_simulator

    with run_simulator(served_model_names=("public/embed-small",), ttft_ms=1, itl_ms=1) as url:
        model = CatalogModelFactory(slug="tiny-embed", tasks=["embedding"])
        yield _make_service(org=public_org, model=model, name="embed-small", replicas=[url])


@pytest.fixture
def org_service(org, simulator):
    """The org's dedicated ``acme/my-llama``."""
    model = _make_catalog_model("llama-dedicated")
    return _make_service(org=org, model=model, name="my-llama", replicas=[simulator])


@pytest.fixture
def api_key(org):
    _key, raw = apikey_create(org=org, name="tests")
    return raw


@pytest.fixture
def key_row(org):
    key, raw = apikey_create(org=org, name="tests")
    key.raw = raw
    return key
