"""Billing fixtures: usage records and services with meter events, created directly (the other apps' contract)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from catalog.models import CatalogModel
from deployments.models import EventKind, Region, Service, ServiceEvent
from metering.models import UsageRecord


@pytest.fixture
def public_model(catalog):
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    CatalogModel.objects.filter(pk=model.pk).update(
        input_price_per_1k=Decimal("0.0006"), output_price_per_1k=Decimal("0.0012")
    )
    model.refresh_from_db()
    model.token_prices.all().delete()
    return model


def make_usage(
    org, model, *, prompt=1000, completion=500, cached=0, status="ok", public=True, started_at=None, **extra
) -> UsageRecord:
    started_at = started_at or timezone.now()
    return UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org,
        endpoint="chat.completions",
        model_id=f"public/{model.slug}" if public else f"{org.namespace}/svc",
        catalog_model=model,
        public=public,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        latency_ms=extra.pop("latency_ms", 800),
        ttft_ms=extra.pop("ttft_ms", 120),
        status=status,
        http_status=200 if status != "error" else 502,
        started_at=started_at,
        finished_at=started_at + timedelta(seconds=1),
        **extra,
    )


@pytest.fixture
def region(db):
    return Region.objects.get_or_create(code="cn-test-1", defaults={"name_zh": "测试一区", "name_en": "Test 1"})[0]


def make_service(
    org, model, region, *, name="svc", hourly="3.60", mode="payg", replicas=1, status="Running", **extra
) -> Service:
    return Service.objects.create(
        org=org,
        name=name,
        catalog_model=model,
        region=region,
        variant_position=0,
        runtime="vllm",
        runtime_version="0.8.5",
        image="vllm/vllm-openai:v0.8.5",
        gpu_product="NVIDIA-H100",
        gpu_count=1,
        per_gpu_memory_gb=80,
        cpu=8,
        memory_gb=64,
        max_model_len=8192,
        replicas=replicas,
        billing_mode=mode,
        hourly_price=Decimal(hourly),
        currency="CNY",
        status=status,
        **extra,
    )


def meter(service, at, instances) -> ServiceEvent:
    return ServiceEvent.objects.create(
        service=service, kind=EventKind.METER, billable_instances=instances, created_at=at
    )
