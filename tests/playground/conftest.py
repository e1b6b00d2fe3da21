"""Playground fixtures: public and org services with replicas, pointing at engine simulators when a test needs one."""

from __future__ import annotations

import os

import pytest

from catalog.models import CatalogModel
from deployments.models import Service, ServiceStatus
from tests.factories import RegionFactory, ReplicaFactory, ServiceFactory

PUBLIC_SLUG = "qwen2-0.5b-instruct"
COMPARE_SLUG = "llama-3.1-8b-instruct"


@pytest.fixture(autouse=True)
def _own_gateway_keys(settings):
    """Budgets, rate windows and the usage stream of this run stay apart from other runs sharing the Redis."""
    settings.GATEWAY_REDIS_PREFIX = f"test-pg-{os.getpid()}:"


@pytest.fixture
def region(db):
    return RegionFactory()


def make_service(
    *, org, slug: str, name: str, region, status=ServiceStatus.RUNNING, base_url: str | None = None, ready: bool = True
) -> Service:
    service = ServiceFactory(
        org=org,
        name=name,
        catalog_model=CatalogModel.objects.get(slug=slug),
        region=region,
        ready_instances=1 if ready else 0,
        status=status,
    )
    if base_url is not None:
        ReplicaFactory(service=service, name=f"{name}-0", base_url=base_url, ready=ready)
    return service


@pytest.fixture
def public_model(catalog, public_org, region):
    """``public/qwen2-0.5b-instruct`` with a running public deployment (no replica: tests add one when they call it)."""
    return make_service(org=public_org, slug=PUBLIC_SLUG, name="qwen-small", region=region)


@pytest.fixture
def org_service(catalog, org, region):
    """The org's own running service ``acme/my-llama``."""
    return make_service(org=org, slug=COMPARE_SLUG, name="my-llama", region=region)
