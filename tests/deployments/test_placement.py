"""Variant fit against a region's GPUs, the exact "cannot place" messages, and instance prices."""

from decimal import Decimal

import pytest

from core.errors import ApplicationError
from deployments.models import GpuPrice, Region
from deployments.placement import instance_prices, place
from deployments.services import cluster_register
from tests.deployments.helpers import H100, qwen
from tests.factories import RegionFactory
from tests.support.kubeapi import run_kube_api

pytestmark = pytest.mark.django_db


def fresh(region_obj) -> Region:
    return Region.objects.prefetch_related("clusters").get(pk=region_obj.pk)


def test_small_model_takes_one_h100_as_a_deployment(catalog, kube_cluster, region):
    found = place(qwen(), fresh(region))
    assert (found.cluster, found.gpu_product, found.gpu_count, found.gpus_per_node, found.nodes_per_instance) == (
        kube_cluster,
        H100,
        1,
        1,
        1,
    )
    assert (found.variant.runtime, found.runtime_version, found.image) == ("vllm", "0.10.2", "vllm/vllm-openai:v0.10.2")


def test_deepseek_v3_without_lws_says_exactly_why(catalog, region):
    with run_kube_api(lws=False) as api:
        cluster_register(actor=None, name="h100s", region=region, kubeconfig=api.kubeconfig())
    with pytest.raises(ApplicationError) as caught:
        place(qwen("deepseek-v3"), fresh(region))
    assert caught.value.message == (
        "no variant of DeepSeek-V3 fits cn-shanghai-2: needs 16×80 GB GPUs or 8×141 GB GPUs; "
        f"largest free: 8× {H100} per node and no LeaderWorkerSet CRD"
    )


def test_lws_crd_without_its_controller_places_no_multi_node_service_and_says_why(catalog, region):
    with run_kube_api(lws_controller=False) as api:
        cluster = cluster_register(actor=None, name="h100s", region=region, kubeconfig=api.kubeconfig())
    assert not cluster.has_lws
    with pytest.raises(ApplicationError) as caught:
        place(qwen("deepseek-v3"), fresh(region))
    assert caught.value.message.endswith("and the LeaderWorkerSet controller is not running")


def test_deepseek_v3_goes_multi_node_with_lws(catalog, kube_cluster, region):
    found = place(qwen("deepseek-v3"), fresh(region))
    assert (found.variant.runtime, found.gpu_count, found.gpus_per_node, found.nodes_per_instance) == ("vllm", 16, 8, 2)


def test_gpu_memory_must_fit_and_free_gpus_count(catalog, region):
    nodes = [{"name": "l4", "gpus": 8, "product": "NVIDIA-L4", "memory_mb": 23034}]
    with run_kube_api(nodes=nodes) as api:
        api.add_pod("team", "hog", node="l4", gpus=7)
        cluster_register(actor=None, name="l4s", region=region, kubeconfig=api.kubeconfig())
    # qwen2.5-7b needs 1×24 GB on a variant (L4 has 22.5 GiB usable = a "24 GB" card), one GPU is free.
    assert place(qwen(), fresh(region)).gpu_product == "NVIDIA-L4"
    with pytest.raises(ApplicationError) as caught:
        place(qwen(), fresh(region), instances=2)
    assert "largest free: 1× NVIDIA-L4 per node" in caught.value.message
    with pytest.raises(ApplicationError) as caught:
        place(qwen("qwen3-32b"), fresh(region))
    assert "no variant of Qwen3-32B fits cn-shanghai-2" in caught.value.message


def test_cordoned_and_unreachable_clusters_take_no_placements(catalog, kube_cluster, region):
    kube_cluster.cordoned = True
    kube_cluster.save()
    with pytest.raises(ApplicationError) as caught:
        place(qwen(), fresh(region))
    assert caught.value.message.endswith("every cluster of the region is cordoned, unreachable or failing its checks")


def test_region_without_clusters(catalog, db):
    empty = RegionFactory(code="cn-beijing-1", name_zh="北京一区", name_en="Beijing 1")
    with pytest.raises(ApplicationError, match="the region has no cluster"):
        place(qwen(), fresh(empty))


def test_local_cluster_fits_small_models(catalog, local_cluster, region):
    found = place(qwen("qwen2-0.5b-instruct"), fresh(region))
    assert (found.cluster, found.gpu_product, found.gpu_count) == (local_cluster, "Local-Simulated-GPU", 1)


def test_prices_default_then_admin_set(region, settings):
    settings.DEFAULT_GPU_HOURLY_PRICE = Decimal("3.52")
    assert instance_prices(region, H100, 2) == (Decimal("7.040000"), Decimal("3548.160000"), "CNY")
    GpuPrice.objects.create(region=region, gpu_product=H100, hourly_price=Decimal("12.5"), currency="CNY")
    assert instance_prices(region, H100, 2) == (Decimal("25.000000"), Decimal("12600.000000"), "CNY")
    GpuPrice.objects.filter(region=region).update(monthly_price=Decimal("5000"))
    assert instance_prices(region, H100, 2)[1] == Decimal("10000.000000")
