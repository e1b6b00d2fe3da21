"""Probing a customer's cluster: inventory, preflight checks, and every way the connection can fail."""

import socket
import time

import pytest

from deployments.drivers.kube import KubeError, probe_cluster
from tests.support.kubeapi import run_kube_api

H100 = "NVIDIA-H100-80GB-HBM3"
L40S = "NVIDIA-L40S"


def probe(server, **kwargs):
    return probe_cluster(server.kubeconfig(), None, timeout=kwargs.pop("timeout", 2), **kwargs)


def failure(server_or_text, timeout=2) -> KubeError:
    source = server_or_text if isinstance(server_or_text, str) else server_or_text.kubeconfig()
    with pytest.raises(KubeError) as caught:
        probe_cluster(source, None, timeout=timeout)
    return caught.value


def test_healthy_gpu_cluster_inventory_counts_allocated_gpus_from_pods():
    nodes = [
        {"name": "h100-a", "gpus": 8, "product": H100},
        {"name": "h100-b", "gpus": 8, "product": H100},
        {"name": "l40s-a", "gpus": 4, "product": L40S, "memory_mb": 46068},
        {"name": "h100-cordoned", "gpus": 8, "product": H100, "unschedulable": True},
        {"name": "cpu-a", "gpus": 0},
    ]
    with run_kube_api(nodes=nodes, priority_classes=("maas-online-inference",)) as server:
        server.add_pod("team-a", "train-0", node="h100-a", gpus=6)
        server.add_pod("team-a", "train-1", node="l40s-a", gpus=1)
        server.add_pod("team-a", "done", node="h100-b", gpus=8, phase="Succeeded")
        server.add_pod("team-a", "web", node="cpu-a")
        result = probe(server)

    assert result.server_url == server.url
    assert result.server_version == "v1.33.1"
    assert {n.name: n.gpu_allocated for n in result.nodes} == {
        "h100-a": 6,
        "h100-b": 0,
        "l40s-a": 1,
        "h100-cordoned": 0,
        "cpu-a": 0,
    }
    h100 = next(n for n in result.nodes if n.name == "h100-a")
    assert (h100.gpu_product, h100.gpu_memory_mb, h100.gpu_capacity, h100.gpu_allocatable) == (H100, 81559, 8, 8)
    assert h100.ready and not h100.unschedulable
    assert h100.taints == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert result.gpu_inventory() == {
        H100: {
            "total": 24,
            "allocatable": 16,
            "allocated": 6,
            "free": 10,
            "memory_mb": 81559,
            "nodes": 3,
            "max_per_node": 8,
            "max_free_per_node": 8,
        },
        L40S: {
            "total": 4,
            "allocatable": 4,
            "allocated": 1,
            "free": 3,
            "memory_mb": 46068,
            "nodes": 1,
            "max_per_node": 4,
            "max_free_per_node": 3,
        },
    }
    assert [(c.key, c.ok) for c in result.checks] == [
        ("gpu_device_plugin", True),
        ("priority_class", True),
        ("rbac", True),
        ("lws_crd", True),
        ("storage_class", True),
    ]
    assert result.has_lws and result.ready


def test_preflight_failures_each_say_what_to_fix():
    with run_kube_api(nodes=[{"name": "cpu-a", "gpus": 0}], lws=False, default_storage_class=False) as server:
        server.add_storage_class("slow")
        server.set_rbac(denied={"get pods/proxy", "create namespaces", "create priorityclasses"})
        result = probe(server)
    checks = {c.key: c for c in result.checks}
    assert not any(c.ok for c in checks.values())
    assert checks["gpu_device_plugin"].message == "none of the 1 nodes advertises nvidia.com/gpu"
    assert "GPU Operator" in checks["gpu_device_plugin"].fix
    assert checks["priority_class"].message == (
        "PriorityClass maas-online-inference is missing and these credentials cannot create priorityclasses"
    )
    assert "kubectl create priorityclass maas-online-inference" in checks["priority_class"].fix
    assert checks["rbac"].message == (
        "these credentials cannot get pods/proxy, create namespaces, create priorityclasses.scheduling.k8s.io"
        " in all namespaces"
    )
    assert "ClusterRole maas-control-plane" in checks["rbac"].fix
    assert "multi-node services are unavailable" in checks["lws_crd"].message
    assert checks["storage_class"].message.startswith("no default StorageClass (classes: slow)")
    assert not result.has_lws and not result.ready
    assert not checks["lws_crd"].blocking and not checks["storage_class"].blocking


def test_missing_priority_class_passes_when_it_can_be_created():
    with run_kube_api() as server:
        check = probe(server).check("priority_class")
    assert check.ok and check.message == (
        "PriorityClass maas-online-inference is missing; the platform will create it"
        " (value 1000, preemptionPolicy Never)"
    )


def test_lws_check_falls_back_to_discovery_when_crds_are_unreadable():
    with run_kube_api() as server:
        server.fail_next("GET", "/customresourcedefinitions/", 403)
        assert probe(server).has_lws


def test_rejected_token_is_unauthorized():
    with run_kube_api(tokens=("good",)) as server:
        error = failure(server.kubeconfig(token="expired"))
    assert error.kind == "unauthorized" and error.status == 401 and not error.retryable
    assert error.message == "the API server rejected the credentials (401 Unauthorized): token expired or invalid"


def test_forbidden_node_list():
    with run_kube_api() as server:
        server.fail_next(
            "GET",
            r"^/api/v1/nodes$",
            403,
            message='nodes is forbidden: User "system:serviceaccount:default:maas" cannot list resource "nodes" in API group "" at the cluster scope',  # noqa: E501
        )
        error = failure(server)
    assert error.kind == "forbidden" and error.status == 403 and not error.retryable
    assert error.message == (
        "the credentials are not allowed to GET /api/v1/nodes (403 Forbidden): nodes is forbidden: User "
        '"system:serviceaccount:default:maas" cannot list resource "nodes" in API group "" at the cluster scope; '
        "the platform needs every permission of the ClusterRole maas-control-plane shown on the cluster page"
    )


def test_closed_port_is_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with run_kube_api() as server:
        error = failure(server.kubeconfig(server=f"https://127.0.0.1:{port}"))
    assert error.kind == "unreachable" and error.retryable
    assert error.message == f"cannot reach https://127.0.0.1:{port}: connection refused"


def test_slow_api_server_times_out_within_the_timeout():
    with run_kube_api() as server:
        server.delay(r"^/version$", 5)
        started = time.monotonic()
        error = failure(server, timeout=0.4)
        elapsed = time.monotonic() - started
    assert error.kind == "timeout" and error.retryable
    assert error.message == f"the API server at {server.url} did not answer within 0.4s"
    assert elapsed < 2


def test_expired_certificate_is_a_tls_error():
    with run_kube_api(tls="expired") as server:
        error = failure(server)
    assert error.kind == "tls" and not error.retryable
    assert error.message == "certificate verify failed: certificate has expired"


def test_valid_certificate_from_inline_ca_data_connects():
    with run_kube_api(tls="valid") as server:
        assert server.url.startswith("https://")
        assert probe(server).server_version == "v1.33.1"
        error = failure(server.kubeconfig(ca=False))
    assert error.kind == "tls"
    assert error.message == "certificate verify failed: self-signed certificate"


def test_https_url_against_plain_http_port_names_the_mistake():
    with run_kube_api() as server:
        error = failure(server.kubeconfig(server=server.url.replace("http://", "https://")))
    assert error.kind == "tls"
    assert "does not speak TLS" in error.message
