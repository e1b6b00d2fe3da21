"""Fixtures for the control-plane tests: a region, clusters (a test Kubernetes API server, local), a workload spec."""

import pytest

from deployments.drivers.kube import WorkloadSpec, api_client
from deployments.models import Cluster
from deployments.services import cluster_register, local_cluster_create
from tests.factories import RegionFactory, UserFactory
from tests.support.kubeapi import run_kube_api


@pytest.fixture
def kube_api():
    """The in-memory Kubernetes API server; pods start their containers at once and wait for mark_ready()."""
    with run_kube_api(start_after=None) as server:
        yield server


@pytest.fixture
def kube_client(kube_api):
    client = api_client(kube_api.kubeconfig(), None, timeout=2)
    yield client
    client.close()


def make_workload_spec(**overrides) -> WorkloadSpec:
    values = dict(
        namespace="maas-u-8105f7322477",
        name="svc-3f2a9c1e",
        service_id="3f2a9c1e-7b4d-4e8a-9c61-0d5e2f7a8b90",
        org_namespace="maas-u-8105f7322477",
        served_model_name="u-8105f7322477/my-qwen",
        runtime="vllm",
        image="vllm/vllm-openai:v0.8.5",
        model_source="Qwen/Qwen2.5-7B-Instruct",
        gpu_count=1,
        gpus_per_node=1,
        nodes_per_instance=1,
        gpu_product="NVIDIA-H100-80GB-HBM3",
        replicas=1,
        max_model_len=8192,
        cpu=8,
        memory_gb=64,
        shm_gb=16,
    )
    values.update(overrides)
    return WorkloadSpec(**values)


@pytest.fixture
def workload_spec():
    return make_workload_spec()


@pytest.fixture
def region(db):
    return RegionFactory(code="cn-shanghai-2", name_zh="上海二区", name_en="Shanghai 2", position=10)


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
