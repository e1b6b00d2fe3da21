"""The platform's permission list: the ClusterRole built from it, its pre-flight, and that it covers every call made."""

import pytest
import requests
import yaml
from django.urls import reverse

from deployments import reconcile
from deployments.drivers.kube import KubeError, probe_cluster, validate_manifests
from deployments.drivers.kube.access import replica_access
from deployments.drivers.kube.rbac import CLUSTER_ROLE_NAME, PERMISSIONS, cluster_role, cluster_role_yaml, covers
from deployments.models import Replica, Service, ServiceStatus
from deployments.services import (
    cluster_set_namespace_settings,
    cluster_set_priority,
    service_create,
    service_delete,
    service_scale,
    service_stop,
)
from tests.deployments.helpers import passes, qwen

pytestmark = pytest.mark.django_db
NS, NAME = "maas-acme", "svc-chat"


def test_cluster_role_is_generated_from_the_one_list_and_is_valid():
    role = cluster_role()
    validate_manifests([role])
    assert role["metadata"]["name"] == CLUSTER_ROLE_NAME
    granted = {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {(v, p.group, p.resource) for p in PERMISSIONS for v in p.verbs}
    documents = list(yaml.safe_load_all(cluster_role_yaml()))
    assert [d["kind"] for d in documents] == ["ClusterRole", "ClusterRoleBinding"]
    validate_manifests(documents)


def test_every_call_of_onboarding_deploy_scale_stop_delete_and_reconcile_is_in_the_list(
    org, alice, catalog, region, kube_api
):
    from deployments.services import cluster_register

    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    cluster = cluster_register(actor=None, name="gpu-a", region=region, kubeconfig=kube_api.kubeconfig())
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=1)
    assert passes(service, 2).status == ServiceStatus.RUNNING
    # The gateway's path to a replica (proxy access mode): what it sends, with the credentials it uses.
    headers, verify, cert = replica_access(cluster)
    replica = Replica.objects.get(service=service)
    requests.get(f"{replica.base_url}/v1/models", headers=headers, timeout=5)
    requests.post(f"{replica.base_url}/v1/chat/completions", json={}, headers=headers, timeout=5)
    # Hub tokens for the namespace: the next apply creates their Secret.
    cluster_set_namespace_settings(cluster=cluster, actor=None, org_gpu_quota=16, hf_token="hf_token_value")
    service_scale(service=service, actor=alice, instances=2)
    passes(service)
    reconcile.reconcile_cluster(cluster.pk)
    kube_api.get("deployments", NS, NAME, group="apps")
    with kube_api.lock:  # deleted behind the platform's back: the next pass puts it back
        kube_api._store[("apps", "v1", "deployments")].pop((NS, NAME))
    reconcile.reconcile_cluster(cluster.pk)
    kube_api.set_pod_failure(NS, NAME, "ImagePullBackOff")  # a failing workload: its Warning events are read
    assert passes(service).status == ServiceStatus.FAILED
    kube_api.clear_pod_failure(NS, NAME)
    # A multi-node service runs as a LeaderWorkerSet.
    big = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="big", instances=1)
    Service.objects.filter(pk=big.pk).update(nodes_per_instance=2, gpu_count=2)
    passes(big, 2)
    with kube_api.lock:
        kube_api._store[("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")].pop((NS, "svc-big"))
    reconcile.reconcile_cluster(cluster.pk)
    for each in (service, big):
        service_stop(service=each, actor=alice)
        passes(each, 2)
        service_delete(service=each, actor=alice)
        passes(each, 3)
    reconcile.reconcile_cluster(cluster.pk)
    cluster_set_priority(cluster=cluster, actor=None, priority_value=500, priority_preemption="Never")

    requested = kube_api.requested_permissions()
    assert requested, "the test API server logged no resource request"
    uncovered = sorted(
        f"{verb} {resource}.{group}" for verb, group, resource in requested if not covers(verb, group, resource)
    )
    assert uncovered == []
    # And the list grants nothing the platform does not use.
    unused = sorted(
        f"{verb} {p.resource}.{p.group}"
        for p in PERMISSIONS
        for verb in p.verbs
        if (verb, p.group, p.resource) not in requested
    )
    assert unused == []


def test_the_cluster_page_shows_the_cluster_role_to_apply(admin_client, kube_cluster):
    page = admin_client.get(reverse("deployments:cluster-detail", args=[kube_cluster.pk])).content.decode()
    assert f"name: {CLUSTER_ROLE_NAME}" in page and "kind: ClusterRole" in page and "pods/proxy" in page


@pytest.mark.parametrize(
    "denied, named",
    [
        ("get deployments", "get deployments.apps"),
        ("patch namespaces", "patch namespaces"),
        ("get priorityclasses", "get priorityclasses.scheduling.k8s.io"),
        ("list storageclasses", "list storageclasses.storage.k8s.io"),
        ("create pods/proxy", "create pods/proxy"),
    ],
)
def test_preflight_names_each_missing_verb_and_keeps_its_other_checks(kube_api, denied, named):
    kube_api.set_rbac(denied={denied})
    probe = probe_cluster(kube_api.kubeconfig(), None)
    checks = {c.key: c for c in probe.checks}
    assert not checks["rbac"].ok and checks["rbac"].message == f"these credentials cannot {named} in all namespaces"
    assert CLUSTER_ROLE_NAME in checks["rbac"].fix
    assert {c.key for c in probe.checks} == {
        "gpu_device_plugin",
        "priority_class",
        "rbac",
        "lws_crd",
        "lws_controller",
        "storage_class",
    }
    assert not probe.ready


def test_preflight_without_list_nodes_says_so(kube_api):
    kube_api.set_rbac(denied={"list nodes"})
    with pytest.raises(KubeError) as caught:
        probe_cluster(kube_api.kubeconfig(), None)
    assert caught.value.kind == "forbidden" and 'cannot list resource "nodes"' in caught.value.message


def test_a_missing_verb_gives_one_stable_status_not_failed_then_running(
    org, alice, catalog, kube_cluster, region, kube_api
):
    kube_api.set_auto(start_after=0.0, ready_after=0.0)
    kube_api.set_rbac(denied={"get deployments"})
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=1)
    seen = []
    for _ in range(3):
        seen.append(passes(service).status)
        reconcile.reconcile_cluster(kube_cluster.pk)
        service.refresh_from_db()
        seen.append(service.status)
    assert seen[1:] == [seen[1]] * (len(seen) - 1), seen
    assert seen[-1] == ServiceStatus.RUNNING


def test_a_missing_list_verb_fails_every_pass_with_the_same_precise_message(
    org, alice, catalog, kube_cluster, region, kube_api
):
    kube_api.set_rbac(denied={"list deployments"})
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=1)
    messages = set()
    for _ in range(2):
        passes(service)
        service.refresh_from_db()
        messages.add((service.status, service.status_reason, service.status_message))
        reconcile.reconcile_cluster(kube_cluster.pk)
        service.refresh_from_db()
        messages.add((service.status, service.status_reason, service.status_message))
    assert len(messages) == 1, messages
    status, reason, message = messages.pop()
    assert (status, reason) == (ServiceStatus.FAILED, "ClusterForbidden")
    assert 'cannot list resource "deployments"' in message and CLUSTER_ROLE_NAME in message


def test_every_request_names_the_platform_in_its_user_agent(kube_api, region, org, alice, catalog):
    from importlib import metadata

    from deployments.services import cluster_register

    cluster = cluster_register(actor=None, name="gpu-a", region=region, kubeconfig=kube_api.kubeconfig())
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=1)
    passes(service, 2)
    reconcile.reconcile_cluster(cluster.pk)
    agents = {r.user_agent for r in kube_api.request_log}
    assert agents == {f"maas/{metadata.version('maas')}"}
