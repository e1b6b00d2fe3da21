"""Playground fixtures: public and org services with replicas, pointing at engine simulators when a test needs one."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from catalog.models import CatalogModel
from deployments.models import Region, Replica, Service, ServiceStatus

PUBLIC_SLUG = "qwen2-0.5b-instruct"
COMPARE_SLUG = "llama-3.1-8b-instruct"


@pytest.fixture(autouse=True)
def _own_gateway_keys(settings):
    """Budgets, rate windows and the usage stream of this run stay apart from other runs sharing the Redis."""
    settings.GATEWAY_REDIS_PREFIX = f"test-pg-{os.getpid()}:"


@pytest.fixture
def region(db):
    return Region.objects.create(code="cn-test-1", name_zh="测试一区", name_en="Test 1")


def make_service(
    *, org, slug: str, name: str, region, status=ServiceStatus.RUNNING, base_url: str | None = None, ready: bool = True
) -> Service:
    model = CatalogModel.objects.get(slug=slug)
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
        replicas=1,
        ready_replicas=1 if ready else 0,
        hourly_price=Decimal("12.50"),
        currency="CNY",
        status=status,
    )
    if base_url is not None:
        Replica.objects.create(service=service, name=f"{name}-0", base_url=base_url, ready=ready)
    return service


@pytest.fixture
def public_model(catalog, public_org, region):
    """``public/qwen2-0.5b-instruct`` with a running public deployment (no replica: tests add one when they call it)."""
    return make_service(org=public_org, slug=PUBLIC_SLUG, name="qwen-small", region=region)


@pytest.fixture
def org_service(catalog, org, region):
    """The org's own running service ``acme/my-llama``."""
    return make_service(org=org, slug=COMPARE_SLUG, name="my-llama", region=region)
