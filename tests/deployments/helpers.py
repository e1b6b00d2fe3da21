"""Fixtures and helpers for the deployments control-plane tests (import the fixtures by name)."""
import pytest

from deployments import reconcile
from deployments.local import synthetic_nodes
from deployments.models import Cluster, ClusterDriver, Region, Service
from deployments.services import cluster_register, local_cluster_create
from tests.factories import UserFactory

H100 = "NVIDIA-H100-80GB-HBM3"


@pytest.fixture
def region(db):
    return Region.objects.create(code="cn-shanghai-2", name_zh="上海二区", name_en="Shanghai 2", position=10)


@pytest.fixture
def admin_client(db):
    from django.test import Client

    user = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def kube_cluster(kube_api, region) -> Cluster:
    """A cluster onboarded through the real kubeconfig probe against the test API server (2 nodes × 8 H100, LWS)."""
    return cluster_register(actor=None, name="gpu-a", region=region, kubeconfig=kube_api.kubeconfig())


@pytest.fixture
def local_cluster(region) -> Cluster:
    return local_cluster_create(name="local", region=region)


def qwen(catalog_slug="qwen2.5-7b-instruct"):
    from catalog.models import CatalogModel

    return CatalogModel.objects.prefetch_related("variants").get(slug=catalog_slug)


def passes(service: Service, n: int = 1) -> Service:
    for _ in range(n):
        reconcile.reconcile_service(service.pk)
    return Service.objects.get(pk=service.pk)


def meters(service: Service) -> list[int]:
    return list(service.events.filter(kind="meter").order_by("created_at", "id").values_list("billable_instances", flat=True))


def statuses(service: Service) -> list[str]:
    return list(service.events.filter(kind="status").order_by("created_at", "id").values_list("status", flat=True))


__all__ = ["H100", "ClusterDriver", "admin_client", "kube_cluster", "local_cluster", "meters", "passes", "qwen",
           "region", "statuses", "synthetic_nodes"]
