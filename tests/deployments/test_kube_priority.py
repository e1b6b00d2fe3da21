"""The platform's PriorityClass: an admin's choice of value and preemption, by default one that evicts nobody."""

import pytest
from django.urls import reverse

from core.errors import ApplicationError
from deployments.models import Cluster
from deployments.services import cluster_register, cluster_set_priority
from tenancy.models import AuditEvent
from tests.deployments.test_onboarding import post_cluster

pytestmark = pytest.mark.django_db
PC = "maas-online-inference"


def priority_class(kube_api):
    return kube_api.get("priorityclasses", None, PC, group="scheduling.k8s.io")


def test_onboarding_creates_a_class_that_preempts_nothing_by_default(kube_api, region):
    cluster = cluster_register(actor=None, name="gpu-a", region=region, kubeconfig=kube_api.kubeconfig())
    created = priority_class(kube_api)
    assert created["preemptionPolicy"] == "Never" and created["value"] == 1000
    assert (cluster.priority_value, cluster.priority_preemption) == (1000, "Never")
    check = next(c for c in cluster.checks if c["key"] == "priority_class")
    assert "value 1000, preemptionPolicy Never" in check["message"]


def test_the_registration_form_takes_the_admins_choice(admin_client, region, kube_api):
    response = post_cluster(
        admin_client, region, kube_api.kubeconfig(), priority_value="50000", priority_preemption="PreemptLowerPriority"
    )
    assert response.status_code == 302
    assert (priority_class(kube_api)["value"], priority_class(kube_api)["preemptionPolicy"]) == (
        50000,
        "PreemptLowerPriority",
    )
    cluster = Cluster.objects.get(name="gpu-a")
    assert (cluster.priority_value, cluster.priority_preemption) == (50000, "PreemptLowerPriority")


@pytest.mark.parametrize(
    "value, policy, field",
    [
        ("1000000000", "Never", "priority_value"),
        ("2000001000", "Never", "priority_value"),
        ("-1", "Never", "priority_value"),
        ("100", "PreemptEverything", "priority_preemption"),
    ],
)
def test_a_class_above_the_system_ones_or_an_unknown_policy_is_refused(
    admin_client, region, kube_api, value, policy, field
):
    response = post_cluster(
        admin_client, region, kube_api.kubeconfig(), priority_value=value, priority_preemption=policy
    )
    assert response.status_code == 200 and response.context["form"].errors.get(field)
    assert not Cluster.objects.exists() and priority_class(kube_api) is None


def test_the_service_refuses_a_system_level_value(region, kube_api):
    with pytest.raises(ApplicationError) as caught:
        cluster_register(
            actor=None, name="gpu-a", region=region, kubeconfig=kube_api.kubeconfig(), priority_value=1_000_000_000
        )
    assert caught.value.field == "priority_value" and priority_class(kube_api) is None


def test_an_existing_class_that_preempts_is_shown_and_replaced(kube_api, region):
    kube_api.add_priority_class(PC, value=100000)  # the old default: PreemptLowerPriority, a high value
    cluster = cluster_register(actor=None, name="gpu-a", region=region, kubeconfig=kube_api.kubeconfig())
    check = next(c for c in cluster.checks if c["key"] == "priority_class")
    assert "value 100000, preemptionPolicy PreemptLowerPriority" in check["message"]
    assert "will replace it (value 1000, preemptionPolicy Never)" in check["message"]
    assert (priority_class(kube_api)["value"], priority_class(kube_api)["preemptionPolicy"]) == (1000, "Never")


def test_an_admin_changes_the_class_from_the_cluster_page(admin_client, kube_cluster, kube_api):
    url = reverse("deployments:cluster-priority", args=[kube_cluster.pk])
    response = admin_client.post(url, {"priority_value": "2000", "priority_preemption": "PreemptLowerPriority"})
    assert response.status_code == 302
    assert (priority_class(kube_api)["value"], priority_class(kube_api)["preemptionPolicy"]) == (
        2000,
        "PreemptLowerPriority",
    )
    kube_cluster.refresh_from_db()
    assert kube_cluster.priority_value == 2000
    assert AuditEvent.objects.filter(action="cluster.priority").exists()
    check = next(c for c in kube_cluster.checks if c["key"] == "priority_class")
    assert check["message"] == f"PriorityClass {PC} exists (value 2000, preemptionPolicy PreemptLowerPriority)"

    refused = admin_client.post(url, {"priority_value": "1000000000", "priority_preemption": "Never"})
    assert refused.status_code == 400 and priority_class(kube_api)["value"] == 2000


def test_a_refused_change_saves_nothing(kube_cluster, kube_api):
    kube_api.fail_next("PATCH", "/priorityclasses/", 403)
    with pytest.raises(ApplicationError):
        cluster_set_priority(cluster=kube_cluster, actor=None, priority_value=10, priority_preemption="Never")
    kube_cluster.refresh_from_db()
    assert kube_cluster.priority_value == 1000
