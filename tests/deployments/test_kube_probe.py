"""Probing a customer's cluster: inventory, preflight checks, and every way the connection can fail."""

import socket
import time

import pytest

from deployments.drivers.kube import KubeError, api_client, probe_cluster
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
        ("lws_controller", True),
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


def test_lws_crd_without_its_controller_is_no_multi_node():
    with run_kube_api(lws_controller=False) as server:
        result = probe(server)
        checks = {c.key: c for c in result.checks}
        assert checks["lws_crd"].ok and not result.has_lws and result.ready  # not blocking: single-node services run
        controller = checks["lws_controller"]
        assert not controller.ok and not controller.blocking
        assert controller.message == (
            "the LeaderWorkerSet controller lws-system/lws-controller-manager has no available replica: "
            "multi-node services are unavailable"
        )
        assert "kubectl -n lws-system get deploy,pods -l control-plane=controller-manager" in controller.fix
        server.set_lws_controller(running=True)
        assert probe(server).has_lws


def test_lws_controller_is_looked_for_where_the_crd_webhook_points():
    from tests.support.kubeapi import LWS_CRD

    with run_kube_api(lws_controller=False) as server:
        with server.lock:
            crd = server._store[("apiextensions.k8s.io", "v1", "customresourcedefinitions")][("", LWS_CRD)]
            crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["namespace"] = "lws"
        check = probe(server).check("lws_controller")
    assert not check.ok
    assert check.message.startswith(
        "the LeaderWorkerSet CRD is installed but its controller is not running (nothing in lws)"
    )


def test_lws_controller_unreadable_is_not_held_against_the_cluster():
    with run_kube_api() as server:
        server.fail_next("GET", "^/apis/apps/v1/namespaces/lws-system/deployments$", 403)
        result = probe(server)
    check = result.check("lws_controller")
    assert check.ok and "cannot list deployments in lws-system" in check.message and result.has_lws


def test_gpus_of_pods_being_deleted_count_as_free():
    from deployments.drivers.kube import apply_workload, delete_workload, scale_workload
    from tests.deployments.conftest import make_workload_spec

    with run_kube_api(terminate_after=60) as server:
        client = api_client(server.kubeconfig(), None, timeout=2)
        spec = make_workload_spec(gpu_count=8, gpus_per_node=8, replicas=2)
        apply_workload(client, spec)
        assert probe(server).gpu_inventory()[H100]["free"] == 0
        scale_workload(client, spec, 1)  # a scale-down or a stop: the pod has its grace period to go
        assert probe(server).gpu_inventory()[H100]["free"] == 8
        delete_workload(client, spec.namespace, spec.name)
        assert probe(server).gpu_inventory()[H100]["free"] == 16
        assert len(server.pods(spec.namespace)) == 2  # still terminating
        client.close()


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
