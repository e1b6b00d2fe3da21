"""Applying, observing, scaling and deleting a service's workload against the test API server."""

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from deployments.drivers.kube import (
    KubeError,
    WorkloadRef,
    api_client,
    apply_workload,
    delete_workload,
    list_platform_workloads,
    observe_workload,
    observe_workloads,
    scale_workload,
)
from deployments.drivers.kube.config import request
from tests.deployments.conftest import make_workload_spec
from tests.support.kubeapi import run_kube_api

NS = "maas-u-8105f7322477"
NAME = "svc-3f2a9c1e"


def calls_during(server, action):
    server.reset_log()
    result = action()
    return result, [(r.method, r.path) for r in server.request_log]


def test_apply_is_idempotent_server_side_apply(kube_api, kube_client, workload_spec):
    apply_workload(kube_client, workload_spec)
    first = kube_api.get("deployments", NS, NAME, group="apps")
    pods = [p["metadata"]["name"] for p in kube_api.pods(NS, NAME)]

    _, calls = calls_during(kube_api, lambda: apply_workload(kube_client, workload_spec))

    second = kube_api.get("deployments", NS, NAME, group="apps")
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert second["metadata"]["generation"] == 1
    assert [p["metadata"]["name"] for p in kube_api.pods(NS, NAME)] == pods
    assert calls == [
        ("PATCH", f"/api/v1/namespaces/{NS}"),
        ("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/maas-access"),
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"),
        ("PATCH", f"/api/v1/namespaces/{NS}/services/{NAME}"),
        ("DELETE", f"/api/v1/namespaces/{NS}/secrets/maas-hub-tokens"),
        ("DELETE", f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/{NAME}"),
    ]
    for logged in kube_api.request_log[:4]:
        assert logged.content_type == "application/apply-patch+yaml"
        assert logged.query == {"fieldManager": "maas", "force": "true"}
    assert [m["manager"] for m in second["metadata"]["managedFields"]] == ["maas"]
    assert kube_api.get("namespaces", None, NS)["metadata"]["labels"]["maas.io/org"] == NS
    assert kube_api.get("services", NS, NAME)["spec"]["ports"][0]["port"] == 8000


def test_reapplying_a_changed_spec_drops_fields_the_platform_no_longer_sets(kube_api, kube_client, workload_spec):
    apply_workload(kube_client, workload_spec)
    apply_workload(kube_client, make_workload_spec(gpu_product=None, max_model_len=4096))
    deployment = kube_api.get("deployments", NS, NAME, group="apps")
    pod_spec = deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec
    assert "4096" in pod_spec["containers"][0]["args"]
    assert deployment["metadata"]["generation"] == 2


def test_observe_goes_creating_starting_running_with_two_calls_each(kube_api, kube_client):
    spec = make_workload_spec(replicas=2)
    apply_workload(kube_client, spec)

    status, calls = calls_during(kube_api, lambda: observe_workload(kube_client, spec))
    assert (status.phase, status.desired, status.ready, status.endpoints) == ("Creating", 2, 0, [])
    assert calls == [
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"),
        ("GET", f"/api/v1/namespaces/{NS}/pods"),
    ]
    assert kube_api.request_log[1].query == {
        "labelSelector": f"app.kubernetes.io/name={NAME},app.kubernetes.io/managed-by=maas"
    }

    kube_api.mark_running(NS, NAME)
    assert observe_workload(kube_client, spec).phase == "Starting"

    kube_api.mark_ready(NS, NAME, 1)
    status = observe_workload(kube_client, spec)
    assert (status.phase, status.ready, status.available, len(status.endpoints)) == ("Scaling", 1, 1, 1)

    kube_api.mark_ready(NS, NAME)
    status, calls = calls_during(kube_api, lambda: observe_workload(kube_client, spec))
    assert (status.phase, status.desired, status.ready, status.updated, status.available) == ("Running", 2, 2, 2, 2)
    assert (status.reason, status.message) == (None, None)
    assert len(calls) == 2
    pods = sorted(p["metadata"]["name"] for p in kube_api.pods(NS, NAME))
    assert [e.pod_name for e in status.endpoints] == pods
    endpoint = status.endpoints[0]
    assert endpoint.base_url == f"{kube_api.url}/api/v1/namespaces/{NS}/pods/{pods[0]}:8000/proxy"
    assert endpoint.headers == {"Authorization": "Bearer test-token"}
    assert endpoint.tls_verify is True and endpoint.client_cert is None


def test_pods_turn_ready_on_their_own_after_the_configured_delay(workload_spec):
    with run_kube_api(start_after=0.0, ready_after=0.3) as server:
        client = api_client(server.kubeconfig(), None, timeout=2)
        apply_workload(client, workload_spec)
        assert observe_workload(client, workload_spec).phase == "Starting"
        deadline = time.monotonic() + 5
        while observe_workload(client, workload_spec).phase != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        (
            "Unschedulable",
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.",
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.",
        ),
        (
            "ImagePullBackOff",
            'Back-off pulling image "vllm/vllm-openai:v9"',
            'Back-off pulling image "vllm/vllm-openai:v9"',
        ),
        ("OOMKilled", None, "container engine ran out of memory (limit 64Gi) and was killed; restarted 3 times"),
        (
            "CrashLoopBackOff",
            "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens "
            "that can be stored in KV cache (21104).",
            "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored in KV cache (21104).",  # noqa: E501
        ),
    ],
)
def test_failure_reasons_carry_the_real_message(kube_api, kube_client, workload_spec, reason, message, expected):
    apply_workload(kube_client, workload_spec)
    kube_api.set_pod_failure(NS, NAME, reason, message)
    status, calls = calls_during(kube_api, lambda: observe_workload(kube_client, workload_spec))
    assert (status.phase, status.reason, status.message) == ("Failed", reason, expected)
    assert status.endpoints == []
    assert calls[-1] == ("GET", f"/api/v1/namespaces/{NS}/events")
    assert len(calls) == 3


def test_pods_short_of_gpus_wait_for_them_and_a_real_failure_wins(kube_api, kube_client, workload_spec):
    """Insufficient GPUs is waiting (Pending), not failing; whether the shape can ever fit is the driver's call."""
    kube_api.add_pod("team-a", "train-0", node="gpu-node-0", gpus=8)
    kube_api.add_pod("team-a", "train-1", node="gpu-node-1", gpus=8)
    apply_workload(kube_client, workload_spec)
    status = observe_workload(kube_client, workload_spec)
    assert (status.phase, status.reason) == ("Pending", "WaitingForGPUs")
    assert status.message.startswith("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    assert observe_workloads(kube_client, [workload_spec])[0].reason == "WaitingForGPUs"

    request(kube_client, "DELETE", "/api/v1/namespaces/team-a/pods/train-1")
    kube_api.add_pod("team-a", "train-1", node="gpu-node-1", gpus=7)  # room for one of two replicas
    scale_workload(kube_client, workload_spec, 2)
    kube_api.set_pod_failure(NS, NAME, "ImagePullBackOff")  # the scheduled one cannot pull its image
    status = observe_workload(kube_client, workload_spec)
    assert (status.phase, status.reason) == ("Failed", "ImagePullBackOff")


def test_recovered_failure_runs_again(kube_api, kube_client, workload_spec):
    apply_workload(kube_client, workload_spec)
    kube_api.set_pod_failure(NS, NAME, "CrashLoopBackOff", "boom")
    assert observe_workload(kube_client, workload_spec).phase == "Failed"
    kube_api.clear_pod_failure(NS, NAME)
    kube_api.mark_ready(NS, NAME)
    status = observe_workload(kube_client, workload_spec)
    assert (status.phase, status.reason) == ("Running", None)


def test_scale_up_and_down_to_stopped(kube_api, kube_client, workload_spec):
    apply_workload(kube_client, workload_spec)
    _, calls = calls_during(kube_api, lambda: scale_workload(kube_client, workload_spec, 3))
    assert calls == [("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale")]
    assert kube_api.request_log[0].content_type == "application/merge-patch+json"
    assert len(kube_api.pods(NS, NAME)) == 3
    kube_api.mark_ready(NS, NAME)
    assert observe_workload(kube_client, workload_spec).ready == 3

    scale_workload(kube_client, workload_spec, 0)
    status = observe_workload(kube_client, workload_spec)
    assert (status.phase, status.desired, status.endpoints) == ("Stopped", 0, [])


def test_scaling_a_missing_workload_is_not_found(kube_client, workload_spec):
    with pytest.raises(KubeError) as caught:
        scale_workload(kube_client, workload_spec, 2)
    assert (caught.value.kind, caught.value.status, caught.value.retryable) == ("not_found", 404, False)


def test_delete_reports_done_only_when_pods_are_gone(workload_spec):
    with run_kube_api(start_after=None, terminate_after=0.3) as server:
        client = api_client(server.kubeconfig(), None, timeout=2)
        apply_workload(client, workload_spec)
        assert delete_workload(client, NS, NAME) is False
        assert observe_workload(client, workload_spec).phase == "Missing"
        time.sleep(0.35)
        assert delete_workload(client, NS, NAME) is True
        assert server.get("services", NS, NAME) is None
        assert server.get("namespaces", None, NS) is not None


def test_missing_workload_costs_one_call(kube_api, kube_client, workload_spec):
    status, calls = calls_during(kube_api, lambda: observe_workload(kube_client, workload_spec))
    assert (status.exists, status.phase) == (False, "Missing")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (409, "conflict", True),
        (422, "invalid", False),
        (500, "server_error", True),
        (503, "server_error", True),
        (403, "forbidden", False),
        (404, "not_found", False),
    ],
)
def test_api_errors_map_to_kube_error_kinds(kube_api, kube_client, workload_spec, code, kind, retryable):
    kube_api.fail_next("PATCH", "/deployments/", code)
    with pytest.raises(KubeError) as caught:
        apply_workload(kube_client, workload_spec)
    error = caught.value
    assert (error.kind, error.status, error.retryable) == (kind, code, retryable)
    assert error.message.startswith(
        f"the credentials are not allowed to PATCH /apis/apps/v1/namespaces/{NS}/deployments/{NAME}"
        if code == 403
        else f"PATCH /apis/apps/v1/namespaces/{NS}/deployments/{NAME}: "
    )


def test_conflict_message_is_the_servers(kube_api, kube_client, workload_spec):
    kube_api.fail_next("PATCH", "/deployments/", 409)
    with pytest.raises(KubeError) as caught:
        apply_workload(kube_client, workload_spec)
    assert caught.value.message == (
        f"PATCH /apis/apps/v1/namespaces/{NS}/deployments/{NAME}: conflict (409): Operation cannot be fulfilled on "
        f'"{NAME}": the object has been modified; please apply your changes to the latest version and try again'
    )
    apply_workload(kube_client, workload_spec)  # the retry goes through


class _Engine(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        return

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "u-8105f7322477/my-qwen"}], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for word in ["Hello", " from", f" {request['model']}", "[DONE]"]:
            event = f"data: {json.dumps(word)}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@contextmanager
def engine_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_requests_through_the_pod_proxy_reach_the_engine(kube_api, kube_client, workload_spec):
    apply_workload(kube_client, workload_spec)
    kube_api.mark_ready(NS, NAME)
    with engine_server() as upstream:
        kube_api.set_pod_upstream(NS, NAME, upstream)
        (endpoint,) = observe_workload(kube_client, workload_spec).endpoints
        with httpx.Client(headers=endpoint.headers, verify=endpoint.tls_verify, timeout=5) as http:
            models = http.get(f"{endpoint.base_url}/v1/models", params={"limit": 1})
            assert models.status_code == 200
            assert models.json()["data"] == [{"id": "u-8105f7322477/my-qwen"}]
            assert models.json()["path"] == "/v1/models?limit=1"
            with http.stream(
                "POST",
                f"{endpoint.base_url}/v1/chat/completions",
                json={"model": "u-8105f7322477/my-qwen", "stream": True},
            ) as stream:
                assert stream.headers["content-type"] == "text/event-stream"
                events = [line for line in stream.iter_lines() if line]
        assert events == ['data: "Hello"', 'data: " from"', 'data: " u-8105f7322477/my-qwen"', 'data: "[DONE]"']
        assert httpx.get(f"{endpoint.base_url}/v1/models", timeout=5).status_code == 401


def test_pod_ip_and_ingress_access_modes(kube_api, kube_client, workload_spec):
    apply_workload(kube_client, workload_spec)
    kube_api.mark_ready(NS, NAME)
    (pod,) = kube_api.pods(NS, NAME)
    (direct,) = observe_workload(kube_client, workload_spec, access_mode="pod_ip").endpoints
    assert direct.base_url == f"http://{pod['status']['podIP']}:8000"
    assert direct.headers == {}
    (ingress,) = observe_workload(
        kube_client, workload_spec, access_mode="ingress", ingress_base_url="https://gpu.example.com/"
    ).endpoints
    assert ingress.base_url == f"https://gpu.example.com/{NS}/{NAME}"


def test_many_services_are_observed_with_a_constant_number_of_calls(kube_api, kube_client):
    specs = [
        make_workload_spec(
            namespace=f"maas-u-{org:012x}",
            org_namespace=f"maas-u-{org:012x}",
            name=f"svc-{index:08x}",
            service_id=f"00000000-0000-4000-8000-{index:012x}",
        )
        for org in range(3)
        for index in range(org * 10, org * 10 + 4)
    ]
    for spec in specs:
        apply_workload(kube_client, spec)
    kube_api.mark_ready(specs[0].namespace, specs[0].name)
    kube_api.set_pod_failure(specs[5].namespace, specs[5].name, "ImagePullBackOff", "manifest unknown")
    refs = [s.ref for s in specs] + [WorkloadRef(specs[0].namespace, "svc-deleted")]

    statuses, calls = calls_during(kube_api, lambda: observe_workloads(kube_client, refs))

    assert calls == [
        ("GET", "/apis/apps/v1/deployments"),
        ("GET", "/api/v1/pods"),
        ("GET", f"/api/v1/namespaces/{specs[5].namespace}/events"),
    ]
    assert [s.phase for s in statuses] == ["Running"] + ["Creating"] * 4 + ["Failed"] + ["Creating"] * 6 + ["Missing"]
    assert statuses[5].message == "manifest unknown"
    assert len(statuses[0].endpoints) == 1

    kube_api.fail_next("GET", r"^/apis/apps/v1/deployments$", 403)
    statuses, calls = calls_during(kube_api, lambda: observe_workloads(kube_client, refs[:4]))
    assert calls == [
        ("GET", f"/apis/apps/v1/namespaces/{specs[0].namespace}/deployments"),
        ("GET", f"/api/v1/namespaces/{specs[0].namespace}/pods"),
    ]

    kube_api.fail_next("GET", r"^/apis/apps/v1/deployments$", 403)
    statuses, calls = calls_during(kube_api, lambda: observe_workloads(kube_client, refs[:8]))
    assert len(calls) == 1 + 2 * 2 + 1  # forbidden cluster-wide list, two namespaces, one failing
    assert [s.phase for s in statuses] == ["Running"] + ["Creating"] * 4 + ["Failed"] + ["Creating"] * 2


def test_multi_node_service_runs_as_leader_worker_set(kube_api, kube_client):
    spec = make_workload_spec(gpu_count=16, gpus_per_node=8, nodes_per_instance=2, replicas=1)
    apply_workload(kube_client, spec)
    pods = sorted(p["metadata"]["name"] for p in kube_api.pods(NS, NAME))
    assert pods == [NAME + "-0", NAME + "-0-1"]
    status = observe_workload(kube_client, spec)
    assert (status.phase, status.desired) == ("Creating", 1)

    kube_api.mark_ready(NS, NAME)
    status, calls = calls_during(kube_api, lambda: observe_workload(kube_client, spec))
    assert (status.phase, status.ready) == ("Running", 1)
    assert [e.pod_name for e in status.endpoints] == [NAME + "-0"]
    assert calls[0] == ("GET", f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/{NAME}")
    assert len(calls) == 2

    assert {(o.kind, o.name) for o in list_platform_workloads(kube_client)} == {
        ("Namespace", NS),
        ("LeaderWorkerSet", NAME),
        ("Service", NAME),
    }

    # Back to one node per instance: the LeaderWorkerSet gives way to a Deployment.
    single = make_workload_spec(gpu_count=8, gpus_per_node=8)
    apply_workload(kube_client, single)
    assert kube_api.get("leaderworkersets", NS, NAME, group="leaderworkerset.x-k8s.io") is None
    assert {o.kind for o in list_platform_workloads(kube_client)} == {"Namespace", "Deployment", "Service"}


def test_leader_worker_set_without_the_crd_is_not_found(workload_spec):
    with run_kube_api(lws=False) as server:
        client = api_client(server.kubeconfig(), None, timeout=2)
        spec = make_workload_spec(gpu_count=16, gpus_per_node=8, nodes_per_instance=2)
        with pytest.raises(KubeError) as caught:
            apply_workload(client, spec)
        assert caught.value.kind == "not_found"
        apply_workload(client, workload_spec)  # single-node services do not need it
        assert [o.kind for o in list_platform_workloads(client)] == ["Namespace", "Deployment", "Service"]


@pytest.mark.parametrize("nodes", [1, 2])
def test_an_untouched_workload_has_no_drift_and_a_changed_one_says_how(kube_api, kube_client, nodes):
    from deployments.drivers.kube import missing_services
    from deployments.drivers.kube.config import request

    spec = make_workload_spec(gpu_count=8 * nodes, gpus_per_node=8, nodes_per_instance=nodes, replicas=1)
    apply_workload(kube_client, spec)
    assert observe_workload(kube_client, spec).drift == [] and observe_workloads(kube_client, [spec])[0].drift == []
    assert missing_services(kube_client, [spec]) == set()
    scale_workload(kube_client, spec, 3)
    assert observe_workload(kube_client, spec).drift == ["replicas 3 (wants 1)"]
    assert observe_workload(kube_client, spec.ref).drift == []  # a bare reference has no desired state to compare

    group = "/apis/leaderworkerset.x-k8s.io/v1" if nodes > 1 else "/apis/apps/v1"
    path = f"{group}/namespaces/{NS}/{spec.ref.kind.lower()}s/{NAME}"
    live = request(kube_client, "GET", path)
    template = live["spec"]["leaderWorkerTemplate"]["leaderTemplate"] if nodes > 1 else live["spec"]["template"]
    template["spec"]["containers"][0]["image"] = "evil/miner:latest"
    template["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    if nodes > 1:
        live["spec"]["leaderWorkerTemplate"]["size"] = 3
    request(kube_client, "PUT", path, body=live)
    drift = observe_workloads(kube_client, [spec])[0].drift
    assert drift == [
        "replicas 3 (wants 1)",
        *(["group size 3 (wants 2)"] if nodes > 1 else []),
        f"{'leader ' if nodes > 1 else ''}container engine image: 'evil/miner:latest' (wants {spec.image!r})",
        f"{'leader ' if nodes > 1 else ''}container engine nvidia.com/gpu: 4 (wants 8)",
    ]

    request(kube_client, "DELETE", f"/api/v1/namespaces/{NS}/services/{NAME}")
    assert missing_services(kube_client, [spec]) == {(NS, NAME)}
