"""The reconcile state machine against the Kubernetes API test server: statuses, failures, retries, meters."""

import pytest

from deployments import reconcile
from deployments.drivers.kube import KubeError
from deployments.models import EventKind, Replica, Service, ServiceStatus
from deployments.services import service_create, service_delete, service_scale, service_start, service_stop
from tests.deployments.helpers import meters, passes, qwen, statuses

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
    assert len(kube_api.request_log) <= 3  # deployments + pods (+ LWS) LISTs for all six
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
