"""The reconcile state machine against the Kubernetes API test server: statuses, failures, retries, meters."""

import socket
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from core.errors import ApplicationError
from deployments import reconcile
from deployments.drivers.kube import KubeError
from deployments.models import Cluster, EventKind, Replica, Service, ServiceStatus
from deployments.services import service_create, service_delete, service_scale, service_start, service_stop
from tests.deployments.helpers import H100, meters, passes, qwen, statuses

pytestmark = pytest.mark.django_db
NS, NAME = "maas-acme", "svc-chat"


@pytest.fixture
def service(org, alice, catalog, kube_cluster, region):
    return service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=2)


def test_creating_starting_running_as_pods_become_ready(service, kube_api, kube_cluster):
    service = passes(service)
    assert service.status == ServiceStatus.CREATING and service.observed_generation == service.generation
    deployment = kube_api.get("deployments", NS, NAME, group="apps")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "vllm/vllm-openai:v0.10.2" and "acme/chat" in container["args"]

    kube_api.mark_running(NS, NAME)
    assert passes(service).status == ServiceStatus.STARTING
    kube_api.mark_ready(NS, NAME, 1)
    service = passes(service)
    assert (service.status, service.ready_instances) == (ServiceStatus.SCALING, 1)
    kube_api.mark_ready(NS, NAME)
    service = passes(service)
    assert (service.status, service.ready_instances) == (ServiceStatus.RUNNING, 2) and service.running_since
    assert statuses(service) == ["Pending", "Creating", "Starting", "Scaling", "Running"]
    assert meters(service) == [1, 2]
    replicas = list(Replica.objects.filter(service=service, ready=True))
    assert len(replicas) == 2
    assert replicas[0].base_url == f"{kube_api.url}/api/v1/namespaces/{NS}/pods/{replicas[0].name}:8000/proxy"

    kube_api.reset_log()
    assert passes(service, 2).status == ServiceStatus.RUNNING
    assert meters(service) == [1, 2]  # steady state writes nothing
    assert all(call.method == "GET" for call in kube_api.request_log)  # and applies nothing


@pytest.mark.parametrize("reason", ["Unschedulable", "ImagePullBackOff", "OOMKilled", "CrashLoopBackOff"])
def test_failure_reasons_are_surfaced(service, kube_api, reason):
    passes(service)
    kube_api.set_pod_failure(NS, NAME, reason, message=f"simulated {reason}")
    service = passes(service)
    assert (service.status, service.status_reason) == (ServiceStatus.FAILED, reason)
    assert service.events.filter(kind=EventKind.STATUS, status="Failed", reason=reason).exists()
    kube_api.clear_pod_failure(NS, NAME)
    kube_api.mark_ready(NS, NAME)
    assert passes(service).status == ServiceStatus.RUNNING


def test_api_500_mid_rollout_retries_then_converges(service, kube_api):
    kube_api.fail_next("PATCH", r"/deployments/", 500, times=1)
    with pytest.raises(KubeError) as caught:
        reconcile.reconcile_service(service.pk)
    assert caught.value.retryable
    service.refresh_from_db()
    assert service.status == ServiceStatus.PENDING and service.reconcile_claimed_until is None  # claim released
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    service = passes(service, 2)
    assert service.status == ServiceStatus.RUNNING and meters(service) == [2]


def test_forbidden_is_a_failure_with_the_real_reason(service, kube_api):
    kube_api.fail_next("PATCH", r"/deployments/", 403, message="deployments.apps is forbidden")
    service = passes(service)
    assert (service.status, service.status_reason) == (ServiceStatus.FAILED, "ClusterForbidden")
    assert "deployments.apps is forbidden" in service.status_message


def test_scale_stop_start_delete_write_exactly_one_meter_per_change(service, kube_api, alice):
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    service = passes(service, 2)
    assert meters(service) == [2]
    service_scale(service=service, actor=alice, instances=3)
    service = passes(service, 2)
    assert (service.status, service.ready_instances) == (ServiceStatus.RUNNING, 3)
    service_scale(service=service, actor=alice, instances=1)
    service = passes(service, 2)
    assert kube_api.get("deployments", NS, NAME, group="apps")["spec"]["replicas"] == 1
    assert meters(service) == [2, 3, 1]

    service_stop(service=service, actor=alice)
    assert meters(service) == [2, 3, 1, 0]  # billing stops with the request, not when pods are gone
    service = passes(service, 2)
    assert service.status == ServiceStatus.STOPPED and not Replica.objects.filter(service=service).exists()
    service_start(service=service, actor=alice)
    service = passes(service, 2)
    assert service.status == ServiceStatus.RUNNING and meters(service) == [2, 3, 1, 0, 1]

    service_delete(service=service, actor=alice)
    service = passes(service, 3)
    assert service.status == ServiceStatus.DELETED and service.deleted_at
    assert kube_api.get("deployments", NS, NAME, group="apps") is None
    assert meters(service) == [2, 3, 1, 0, 1, 0]
    assert statuses(service)[-2:] == ["Deleting", "Deleted"]


def test_a_claimed_service_is_not_driven_twice(service):
    assert reconcile.claim(service.pk)
    assert reconcile.reconcile_service(service.pk).outcome == "busy"
    reconcile.release([service.pk])
    assert reconcile.reconcile_service(service.pk).outcome == "done"


def test_workload_deleted_behind_the_platforms_back_is_recreated(service, kube_api, kube_client):
    from deployments.drivers.kube import delete_workload

    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    passes(service, 2)
    delete_workload(kube_client, NS, NAME)
    passes(service)
    assert kube_api.get("deployments", NS, NAME, group="apps") is not None


def test_cluster_pass_batches_reads(org, alice, catalog, kube_cluster, region, kube_api):
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    services = [
        service_create(org=org, actor=alice, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name=f"b{i}")
        for i in range(6)
    ]
    reconcile.reconcile_cluster(kube_cluster.pk)
    kube_api.reset_log()
    counts = reconcile.reconcile_cluster(kube_cluster.pk)
    assert counts == {"services": 6, "applied": 0, "deleted": 0, "failed": 0, "namespaces_removed": 0}
    # One LIST per kind for all six: deployments, pods (+ LWS), their Services (drift), the org namespaces (cleanup).
    assert [call.method for call in kube_api.request_log] == ["GET"] * len(kube_api.request_log)
    assert len(kube_api.request_log) <= 5, [call.path for call in kube_api.request_log]
    assert {s.status for s in Service.objects.filter(pk__in=[s.pk for s in services])} == {ServiceStatus.RUNNING}


@pytest.fixture
def two_orgs(org, alice, other_org, charlie, catalog, kube_cluster, region, kube_api):
    """A Running service of each of two organizations on the same cluster."""
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    ours = service_create(org=org, actor=alice, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name="chat")
    theirs = service_create(
        org=other_org, actor=charlie, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name="bot"
    )
    reconcile.reconcile_cluster(kube_cluster.pk)
    reconcile.reconcile_cluster(kube_cluster.pk)
    ours, theirs = Service.objects.get(pk=ours.pk), Service.objects.get(pk=theirs.pk)
    assert (ours.status, theirs.status) == (ServiceStatus.RUNNING, ServiceStatus.RUNNING)
    return ours, theirs


def _unchanged(service: Service) -> None:
    after = Service.objects.get(pk=service.pk)
    assert (after.status, after.status_reason, after.status_message, after.ready_instances) == (
        ServiceStatus.RUNNING,
        "",
        "",
        service.ready_instances,
    )
    assert meters(after) == [1] and statuses(after)[-1] == "Running"
    assert Replica.objects.filter(service=after, ready=True).count() == 1


def test_one_services_rejected_apply_fails_only_that_service_in_the_cluster_pass(
    two_orgs, kube_api, kube_cluster, charlie
):
    ours, theirs = two_orgs
    service_scale(service=theirs, actor=charlie, instances=2)
    kube_api.fail_next("PATCH", r"/namespaces/maas-rival/deployments/", 422, times=5, message="spec: Invalid value")
    counts = reconcile.reconcile_cluster(kube_cluster.pk)
    counts_again = reconcile.reconcile_cluster(kube_cluster.pk)
    assert counts["failed"] == counts_again["failed"] == 1
    theirs = Service.objects.get(pk=theirs.pk)
    assert (theirs.status, theirs.status_reason) == (ServiceStatus.FAILED, "ClusterInvalid")
    assert "spec: Invalid value" in theirs.status_message and meters(theirs) == [1, 0]
    _unchanged(ours)


def test_one_services_rejected_apply_fails_only_that_service_in_its_own_pass(two_orgs, kube_api, charlie):
    ours, theirs = two_orgs
    service_scale(service=theirs, actor=charlie, instances=2)
    kube_api.fail_next("PATCH", r"/namespaces/maas-rival/deployments/", 422, times=5)
    assert passes(theirs).status == ServiceStatus.FAILED
    passes(ours)
    _unchanged(ours)


def test_a_retryable_error_of_one_service_leaves_the_others_recorded(two_orgs, kube_api, kube_cluster, alice, charlie):
    ours, theirs = two_orgs
    service_scale(service=ours, actor=alice, instances=2)
    service_scale(service=theirs, actor=charlie, instances=2)
    kube_api.fail_next("PATCH", r"/namespaces/maas-acme/deployments/", 500, times=100)
    for _ in range(2):
        with pytest.raises(KubeError):
            reconcile.reconcile_cluster(kube_cluster.pk)  # raised after the others are recorded: the task retries
    assert meters(Service.objects.get(pk=theirs.pk)) == [1, 2]
    ours = Service.objects.get(pk=ours.pk)
    assert (ours.status, meters(ours)) == (ServiceStatus.SCALING, [1])  # as the scale request left it, not Failed


LWS = "leaderworkerset.x-k8s.io"


@pytest.fixture(params=["Deployment", "LeaderWorkerSet"])
def drifting(request, org, alice, catalog, kube_cluster, region, kube_api):
    """A Running service (2 Deployment replicas, or 1 LeaderWorkerSet group of 2 nodes) and where its workload is."""
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    if request.param == "Deployment":
        service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=2)
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/svc-chat"
    else:
        service = service_create(org=org, actor=alice, catalog_model=qwen("deepseek-v3"), region=region, name="ds")
        assert service.nodes_per_instance == 2
        path = f"/apis/{LWS}/v1/namespaces/{NS}/leaderworkersets/svc-ds"
    service = passes(service, 2)
    assert (service.status, service.ready_instances) == (ServiceStatus.RUNNING, service.desired_instances)
    return service, path


def _templates(workload: dict) -> list[dict]:
    spec = workload["spec"]
    if "leaderWorkerTemplate" in spec:
        return [spec["leaderWorkerTemplate"]["leaderTemplate"], spec["leaderWorkerTemplate"]["workerTemplate"]]
    return [spec["template"]]


def _drift_behind_the_platforms_back(service: Service, path: str, kube_api, kube_client) -> None:
    """What an operator with kubectl did: scale to 5, swap the image, delete the Service."""
    from deployments.drivers.kube.config import request

    workload = request(kube_client, "GET", path)
    workload["spec"]["replicas"] = 5
    for template in _templates(workload):
        template["spec"]["containers"][0]["image"] = "evil/miner:latest"
    request(kube_client, "PUT", path, body=workload)
    request(kube_client, "DELETE", f"/api/v1/namespaces/{NS}/services/{service.k8s_name}")
    assert len(kube_api.pods(NS, service.k8s_name)) == 5 * service.nodes_per_instance


def _only_the_desired_state_is_left(service: Service, path: str, kube_api, kube_client) -> None:
    from billing.services import service_settle
    from deployments.drivers.kube.config import request
    from deployments.selectors import ready_endpoints

    wanted = service.desired_instances
    workload = request(kube_client, "GET", path)
    assert workload["spec"]["replicas"] == wanted
    assert {t["spec"]["containers"][0]["image"] for t in _templates(workload)} == {service.image}
    assert kube_api.get("services", NS, service.k8s_name) is not None
    service = Service.objects.get(pk=service.pk)
    assert (service.status, service.ready_instances, service.status_reason) == (ServiceStatus.RUNNING, wanted, "")
    assert meters(service) == [wanted]
    assert len(ready_endpoints([service.pk])) == wanted  # what the gateway routes to
    with time_machine.travel(timezone.now() + timedelta(hours=1), tick=False):
        passes(service)  # the heartbeat an hour on: billing charges running instances as far as observed
        charged = service_settle(service_id=service.pk)
    assert sum(Decimal(e.data["instance_seconds"]) for e in charged) == pytest.approx(wanted * 3600, abs=wanted * 5)


def test_drift_is_corrected_in_one_service_pass(drifting, kube_api, kube_client):
    service, path = drifting
    _drift_behind_the_platforms_back(service, path, kube_api, kube_client)
    passes(service)
    _only_the_desired_state_is_left(service, path, kube_api, kube_client)


def test_drift_is_corrected_in_one_cluster_pass(drifting, kube_api, kube_client, kube_cluster):
    service, path = drifting
    _drift_behind_the_platforms_back(service, path, kube_api, kube_client)
    counts = reconcile.reconcile_cluster(kube_cluster.pk)
    assert counts["applied"] == 1
    _only_the_desired_state_is_left(service, path, kube_api, kube_client)
    kube_api.reset_log()
    reconcile.reconcile_cluster(kube_cluster.pk)
    assert all(call.method == "GET" for call in kube_api.request_log)  # once corrected, nothing is applied again


def test_replicas_beyond_the_wanted_count_are_neither_shown_billed_nor_routed(service):
    """Until the re-apply has removed them, extra Ready replicas count for nothing (drivers report all they see)."""
    from deployments.drivers import Observed, ObservedReplica
    from deployments.selectors import ready_endpoints

    five = [ObservedReplica(f"pod-{i}", f"http://10.0.0.{i}:8000", True) for i in range(5)]
    service = reconcile.record(service.pk, Observed(phase="Running", ready=5, replicas=five), service.generation)
    assert service.ready_instances == 2 and meters(service) == [2]
    assert [e.replica for e in ready_endpoints([service.pk])] == ["pod-0", "pod-1"]


# --- waiting is not failing (issue 15, item 16) -------------------------------------------------------------------


def test_a_multi_node_service_whose_lws_controller_died_says_so_after_the_progress_timeout(
    org, alice, catalog, kube_cluster, region, kube_api, settings
):
    settings.SERVICE_PROGRESS_TIMEOUT_S = 600
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    kube_api.set_lws_controller(running=False)  # onboarded with it; it died since
    service = service_create(org=org, actor=alice, catalog_model=qwen("deepseek-v3"), region=region, name="ds")
    service = passes(service, 2)
    assert (service.status, service.status_reason) == (ServiceStatus.CREATING, "")
    with time_machine.travel(timezone.now() + timedelta(seconds=599)):
        assert passes(service).status_reason == ""
    with time_machine.travel(timezone.now() + timedelta(seconds=601)):
        service = passes(service)
        assert (service.status, service.status_reason) == (ServiceStatus.CREATING, "NoProgress")
        assert service.status_message == (
            "Creating for 10 minutes without progress: the LeaderWorkerSet has no pods: is the LeaderWorkerSet "
            "controller running (kubectl -n lws-system get deploy lws-controller-manager)?"
        )
        assert service.events.filter(kind=EventKind.STATUS, reason="NoProgress").count() == 1
    with time_machine.travel(timezone.now() + timedelta(seconds=900)):
        service = passes(service, 2)  # still stuck: the reason stays, one event, the minutes go on
        assert service.status_reason == "NoProgress" and service.status_message.startswith("Creating for 15 minutes")
        assert service.events.filter(kind=EventKind.STATUS, reason="NoProgress").count() == 1
        kube_api.set_lws_controller(running=True)
        service = passes(service, 2)
    assert (service.status, service.status_reason, service.ready_instances) == (ServiceStatus.RUNNING, "", 1)


def test_the_no_progress_reason_names_the_pod_that_is_not_ready(service, kube_api, settings):
    settings.SERVICE_PROGRESS_TIMEOUT_S = 60
    service = passes(service)
    kube_api.mark_running(NS, NAME)
    service = passes(service)
    assert service.status == ServiceStatus.STARTING
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        service = passes(service)
    assert service.status_reason == "NoProgress"
    assert "runs but is not Ready (the engine is loading or its readiness check fails)" in service.status_message


def test_a_service_waiting_for_gpus_is_pending_not_failed(service, kube_api, kube_client):
    from deployments.drivers.kube.config import request

    for node in ("gpu-node-0", "gpu-node-1"):  # another team took every GPU after the placement
        kube_api.add_pod("team-a", f"train-{node}", node=node, gpus=8)
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    service = passes(service, 2)
    assert (service.status, service.status_reason) == (ServiceStatus.PENDING, "WaitingForGPUs")
    assert service.status_message.startswith("waiting for GPUs: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu")
    assert meters(service) == [] and not service.events.filter(status=ServiceStatus.FAILED).exists()
    assert reconcile.needs_another_pass(service.status)

    request(kube_client, "DELETE", "/api/v1/namespaces/team-a/pods/train-gpu-node-0")  # the training job ends
    service = passes(service, 2)
    assert (service.status, service.status_reason, service.ready_instances) == (ServiceStatus.RUNNING, "", 2)


def test_a_service_no_node_can_hold_fails_as_unschedulable(service, kube_api):
    """Waiting only makes sense when freed GPUs would do: a pod larger than every node fails with why."""
    Service.objects.filter(pk=service.pk).update(gpu_count=16)  # the 8-GPU nodes it was placed on were replaced
    service = passes(Service.objects.get(pk=service.pk))
    assert (service.status, service.status_reason) == (ServiceStatus.FAILED, "Unschedulable")
    assert service.status_message.startswith(
        f"no node of gpu-a can hold 16× {H100}: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )


def test_a_service_on_an_unreachable_cluster_says_so_and_keeps_its_status(service, kube_api, kube_cluster):
    from core.crypto import encrypt

    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    assert passes(service, 2).status == ServiceStatus.RUNNING
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    Cluster.objects.filter(pk=kube_cluster.pk).update(  # the API server went away
        kubeconfig_encrypted=encrypt(kube_api.kubeconfig(server=f"http://127.0.0.1:{closed}"))
    )
    for run in (lambda: reconcile.reconcile_service(service.pk), lambda: reconcile.reconcile_cluster(kube_cluster.pk)):
        with pytest.raises(KubeError) as caught:
            run()
        assert caught.value.retryable
        after = Service.objects.get(pk=service.pk)
        assert (after.status, after.status_reason, after.ready_instances) == (
            ServiceStatus.RUNNING,
            "ClusterUnreachable",
            2,
        )
        assert after.status_message == (
            f"cluster gpu-a is unreachable: cannot reach http://127.0.0.1:{closed}: connection refused"
        )
    Cluster.objects.filter(pk=kube_cluster.pk).update(kubeconfig_encrypted=encrypt(kube_api.kubeconfig()))
    after = passes(service)
    assert (after.status, after.status_reason, after.status_message) == (ServiceStatus.RUNNING, "", "")
    assert not Service.objects.get(pk=service.pk).events.filter(status=ServiceStatus.FAILED).exists()


@pytest.mark.parametrize("free_it", ["stop", "delete", "scale down"])
def test_gpus_freed_by_a_service_can_be_deployed_on_at_once(
    free_it, org, alice, catalog, kube_cluster, region, kube_api
):
    """The cluster's cached inventory gives the GPUs back with the request, not at the next check."""
    from deployments.services import cluster_check

    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    if free_it == "scale down":
        first = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=16)
    else:
        first = service_create(org=org, actor=alice, catalog_model=qwen("deepseek-v3"), region=region, name="ds")
    passes(first, 2)
    cluster_check(cluster_id=kube_cluster.pk)
    assert Cluster.objects.get(pk=kube_cluster.pk).inventory[H100]["free"] == 0
    with pytest.raises(ApplicationError):
        service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="late")

    first = Service.objects.get(pk=first.pk)
    if free_it == "stop":
        service_stop(service=first, actor=alice)
    elif free_it == "delete":
        service_delete(service=first, actor=alice)
    else:
        service_scale(service=first, actor=alice, instances=8)
    # Right away: no reconcile pass, no check in between.
    freed = 8 if free_it == "scale down" else 16
    second = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="next", instances=freed)
    assert Cluster.objects.get(pk=kube_cluster.pk).inventory[H100]["free"] == 0
    passes(first, 2)
    assert passes(second, 2).status == ServiceStatus.RUNNING


def test_namespace_of_an_org_with_no_service_left_is_removed(two_orgs, kube_api, kube_cluster, alice, charlie):
    ours, theirs = two_orgs
    reconcile.reconcile_cluster(kube_cluster.pk)
    namespaces = {ours.k8s_namespace, theirs.k8s_namespace}
    assert all(kube_api.get("namespaces", None, ns) for ns in namespaces)

    service_delete(service=theirs, actor=charlie)
    passes(theirs, 3)
    assert Service.objects.get(pk=theirs.pk).status == ServiceStatus.DELETED
    counts = reconcile.reconcile_cluster(kube_cluster.pk)
    assert counts["namespaces_removed"] == 1
    assert kube_api.get("namespaces", None, theirs.k8s_namespace) is None
    assert kube_api.get("namespaces", None, ours.k8s_namespace) is not None  # the other org keeps its namespace

    service_delete(service=ours, actor=alice)
    passes(ours, 3)
    assert reconcile.reconcile_cluster(kube_cluster.pk)["namespaces_removed"] == 1  # no service left on the cluster
    assert kube_api.get("namespaces", None, ours.k8s_namespace) is None
    assert reconcile.reconcile_cluster(kube_cluster.pk)["namespaces_removed"] == 0


def test_a_namespace_being_removed_is_a_retryable_apply_error(service, kube_api):
    kube_api.fail_next(
        "PATCH",
        r"/namespaces/maas-acme$",
        403,
        message='namespaces "maas-acme" is forbidden: unable to create new content in namespace maas-acme because '
        "it is being terminated",
    )
    with pytest.raises(KubeError) as caught:
        reconcile.reconcile_service(service.pk)
    assert caught.value.retryable
