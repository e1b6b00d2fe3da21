"""Billing fixtures: usage records and services with meter events, created directly (the other apps' contract)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog.models import CatalogModel
from deployments.models import EventKind, Service, ServiceEvent
from metering.models import UsageRecord
from tests.factories import RegionFactory, ServiceFactory, UsageRecordFactory


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
    if started_at is not None:
        extra["started_at"] = started_at
    return UsageRecordFactory(
        org=org,
        catalog_model=model,
        public=public,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        status=status,
        **extra,
    )


@pytest.fixture
def region(db):
    return RegionFactory()


def make_service(
    org, model, region, *, name="svc", hourly="3.60", mode="payg", instances=1, status="Running", **extra
) -> Service:
    return ServiceFactory(
        org=org,
        name=name,
        catalog_model=model,
        region=region,
        runtime_version="0.8.5",
        instances=instances,
        billing_mode=mode,
        hourly_price=Decimal(hourly),
        status=status,
        **extra,
    )


def meter(service, at, instances) -> ServiceEvent:
    """A change of billable instances at ``at`` (a reconcile pass observing it)."""
    Service.objects.filter(pk=service.pk).update(billed_instances=instances)
    return ServiceEvent.objects.create(
        service=service, kind=EventKind.METER, billable_instances=instances, created_at=at
    )


def observed(service, at) -> None:
    """A reconcile pass saw ``service`` at ``at`` with nothing changed (its heartbeat)."""
    Service.objects.filter(pk=service.pk).update(last_reconciled_at=at)
