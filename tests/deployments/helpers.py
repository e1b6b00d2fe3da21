"""Helpers for the deployments control-plane tests (their fixtures live in conftest.py)."""

from deployments import reconcile
from deployments.models import EventKind, Service

H100 = "NVIDIA-H100-80GB-HBM3"


def qwen(catalog_slug="qwen2.5-7b-instruct"):
    from catalog.models import CatalogModel

    return CatalogModel.objects.prefetch_related("variants").get(slug=catalog_slug)


def passes(service: Service, n: int = 1) -> Service:
    for _ in range(n):
        reconcile.reconcile_service(service.pk)
    return Service.objects.get(pk=service.pk)


def meters(service: Service) -> list[int]:
    return list(
        service.events.filter(kind=EventKind.METER)
        .order_by("created_at", "id")
        .values_list("billable_instances", flat=True)
    )


def statuses(service: Service) -> list[str]:
    return list(
        service.events.filter(kind=EventKind.STATUS).order_by("created_at", "id").values_list("status", flat=True)
    )
