"""Onboarding GPU clusters: the console form and register_cluster probe through the real kubernetes client."""

import io
import re
import socket

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core.crypto import decrypt
from core.errors import ApplicationError
from deployments.models import Cluster, ClusterDriver, ClusterHealth
from deployments.services import cluster_replace_kubeconfig, local_cluster_create
from tests.deployments.helpers import H100
from tests.support.kubeapi import run_kube_api
from tests.support.kubeapi.resources import DEFAULT_TOKEN

NEW = reverse("deployments:cluster-new")


def post_cluster(client, region, kubeconfig, **extra):
    data = {
        "name": "gpu-a",
        "region": region.pk,
        "kubeconfig": kubeconfig,
        "context": "",
        "access_mode": "proxy",
        "ingress_base_url": "",
    }
    data.update(extra)
    return client.post(NEW, data)


def form_errors(response) -> str:
    form = response.context["form"]
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


@pytest.mark.django_db
def test_good_cluster_saves_inventory_checks_and_encrypted_kubeconfig(admin_client, region, kube_api):
    kube_api.add_pod("team-a", "train-0", node="gpu-node-0", gpus=3)
    kubeconfig = kube_api.kubeconfig(token="s3cret-token-value")
    kube_api.set_tokens("s3cret-token-value")

    response = post_cluster(admin_client, region, kubeconfig)

    cluster = Cluster.objects.get(name="gpu-a")
    assert response.status_code == 302 and response.url == reverse("deployments:cluster-detail", args=[cluster.pk])
    assert cluster.health == ClusterHealth.READY and cluster.server_version == "v1.33.1"
    assert cluster.inventory[H100]["total"] == 16 and cluster.inventory[H100]["allocated"] == 3
    assert cluster.inventory[H100]["free"] == 13 and cluster.inventory[H100]["max_per_node"] == 8
    assert cluster.has_lws
    assert {c["key"]: c["ok"] for c in cluster.checks} == {
        "gpu_device_plugin": True,
        "priority_class": True,
        "rbac": True,
        "lws_crd": True,
        "lws_controller": True,
        "storage_class": True,
    }
    # The platform created its PriorityClass on onboarding.
    assert kube_api.get("priorityclasses", None, "maas-online-inference", group="scheduling.k8s.io") is not None
    assert "s3cret-token-value" not in cluster.kubeconfig_encrypted
    assert decrypt(cluster.kubeconfig_encrypted) == kubeconfig

    page = admin_client.get(response.url).content.decode()
    assert "s3cret-token-value" not in page and "13" in page and H100 in page
    assert "the LeaderWorkerSet controller (lws-system/lws-controller-manager) is running" in page


@pytest.mark.django_db
def test_failed_checks_are_shown_with_their_fix(admin_client, region):
    with run_kube_api(lws=False, default_storage_class=False) as api:
        api.set_rbac(denied={"get pods/proxy"})
        post_cluster(admin_client, region, api.kubeconfig())
        cluster = Cluster.objects.get(name="gpu-a")
        page = admin_client.get(reverse("deployments:cluster-detail", args=[cluster.pk])).content.decode()
    checks = {c["key"]: c for c in cluster.checks}
    assert not checks["rbac"]["ok"] and "pods/proxy" in checks["rbac"]["message"]
    assert not checks["lws_crd"]["ok"] and not cluster.has_lws
    assert cluster.health == ClusterHealth.DEGRADED  # a blocking check failed: no placements until fixed
    assert "kubectl annotate storageclass" in page and "install LeaderWorkerSet" in page


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "case, expected",
    [
        ("unauthorized", "401 Unauthorized"),
        ("forbidden", "403 Forbidden"),
        ("unreachable", "connection refused"),
        ("expired", "certificate has expired"),
        ("bad_yaml", "kubeconfig"),
        ("no_context", "has no context"),
    ],
)
def test_bad_connection_gives_a_precise_error_and_saves_nothing(admin_client, region, case, expected):
    tls = "expired" if case == "expired" else None
    with run_kube_api(tls=tls) as api:
        kubeconfig = api.kubeconfig()
        extra = {}
        if case == "unauthorized":
            api.set_tokens("another-token")
        elif case == "forbidden":
            api.fail_next(
                "GET", r"^/api/v1/nodes$", 403, message='nodes is forbidden: User "maas" cannot list resource "nodes"'
            )
        elif case == "unreachable":
            kubeconfig = api.kubeconfig(server=f"http://127.0.0.1:{_closed_port()}")
        elif case == "bad_yaml":
            kubeconfig = "apiVersion: v1\nclusters: [unclosed"
        elif case == "no_context":
            extra = {"context": "prod"}
        response = post_cluster(admin_client, region, kubeconfig, **extra)
    assert response.status_code == 200
    assert expected in form_errors(response)
    assert not Cluster.objects.exists()


@pytest.mark.django_db
def test_upload_of_kubeconfig_file_works(admin_client, region, kube_api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("config", kube_api.kubeconfig().encode(), content_type="text/plain")
    response = admin_client.post(
        NEW, {"name": "gpu-b", "region": region.pk, "kubeconfig": "", "kubeconfig_file": upload, "access_mode": "proxy"}
    )
    assert response.status_code == 302
    assert Cluster.objects.get(name="gpu-b").inventory[H100]["total"] == 16


@pytest.mark.django_db
def test_replacing_the_kubeconfig_is_probed_first(admin_client, region, kube_api):
    post_cluster(admin_client, region, kube_api.kubeconfig())
    cluster = Cluster.objects.get()
    url = reverse("deployments:cluster-detail", args=[cluster.pk])
    kube_api.set_tokens("rotated")
    refused = admin_client.post(url, {"kubeconfig": kube_api.kubeconfig(token="old"), "context": ""})
    assert "401 Unauthorized" in form_errors(refused)
    assert (
        admin_client.post(url, {"kubeconfig": kube_api.kubeconfig(token="rotated"), "context": ""}).status_code == 302
    )
    cluster.refresh_from_db()
    assert "rotated" in decrypt(cluster.kubeconfig_encrypted)


@pytest.mark.django_db
def test_clusters_pages_are_for_platform_admins_only(alice_client, admin_client, region, kube_api):
    assert alice_client.get(reverse("deployments:clusters")).status_code == 404
    assert alice_client.get(NEW).status_code == 404
    post_cluster(admin_client, region, kube_api.kubeconfig())
    cluster = Cluster.objects.get()
    assert alice_client.get(reverse("deployments:cluster-detail", args=[cluster.pk])).status_code == 404
    assert alice_client.post(reverse("deployments:cluster-action", args=[cluster.pk, "cordon"])).status_code == 404
    listing = admin_client.get(reverse("deployments:clusters")).content.decode()
    assert "gpu-a" in listing and "13 / 16" not in listing and "16 / 16" in listing


@pytest.mark.django_db
def test_cordon_and_beat_check_of_an_unreachable_cluster(admin_client, region, kube_api):
    from deployments.services import cluster_check

    post_cluster(admin_client, region, kube_api.kubeconfig())
    cluster = Cluster.objects.get()
    admin_client.post(reverse("deployments:cluster-action", args=[cluster.pk, "cordon"]))
    cluster.refresh_from_db()
    assert cluster.cordoned
    kube_api.set_tokens("nobody")
    checked = cluster_check(cluster_id=cluster.pk)
    assert checked.health == ClusterHealth.UNREACHABLE and "401" in checked.last_error
    kube_api.set_tokens("test-token")
    kube_api.add_node("gpu-node-2", gpus=8)
    checked = cluster_check(cluster_id=cluster.pk)
    assert checked.health == ClusterHealth.READY and checked.inventory[H100]["total"] == 24


@pytest.mark.django_db
def test_register_cluster_command(region, kube_api, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(kube_api.kubeconfig())
    out = io.StringIO()
    call_command(
        "register_cluster", "--name", "gpu-cmd", "--region", "cn-shanghai-2", "--kubeconfig", str(path), stdout=out
    )
    assert "cluster gpu-cmd registered in cn-shanghai-2" in out.getvalue()
    assert f"{H100}: 16 GPUs, 16 free, 2 node(s)" in out.getvalue()
    assert Cluster.objects.get(name="gpu-cmd").context == "maas-test"

    kube_api.set_tokens("other")
    with pytest.raises(CommandError, match="401 Unauthorized"):
        call_command("register_cluster", "--name", "gpu-two", "--region", "cn-shanghai-2", "--kubeconfig", str(path))
    with pytest.raises(CommandError, match="unknown region"):
        call_command("register_cluster", "--name", "gpu-two", "--region", "mars-1", "--kubeconfig", str(path))
    assert not Cluster.objects.filter(name="gpu-two").exists()


@pytest.mark.django_db
def test_register_cluster_command_reads_the_kubeconfig_from_stdin(region, kube_api):
    out = io.StringIO()
    call_command(
        "register_cluster",
        *("--name", "gpu-stdin", "--region", "cn-shanghai-2", "--kubeconfig", "-"),
        stdin=io.StringIO(kube_api.kubeconfig()),
        stdout=out,
    )
    assert "cluster gpu-stdin registered in cn-shanghai-2" in out.getvalue()


@pytest.mark.django_db
def test_only_a_kubernetes_cluster_page_offers_a_kubeconfig(admin_client, kube_cluster, local_cluster):
    page = admin_client.get(reverse("deployments:cluster-detail", args=[kube_cluster.pk])).content.decode()
    assert "Replace the kubeconfig" in page and "Access mode" in page
    page = admin_client.get(reverse("deployments:cluster-detail", args=[local_cluster.pk])).content.decode()
    assert "local processes on 127.0.0.1" in page
    assert "Replace the kubeconfig" not in page and "Access mode" not in page
    with pytest.raises(ApplicationError, match="Only Kubernetes clusters have a kubeconfig"):
        cluster_replace_kubeconfig(cluster=local_cluster, actor=None, kubeconfig="apiVersion: v1")


@pytest.mark.django_db
def test_a_kubernetes_cluster_name_is_not_taken_over_by_a_local_cluster(kube_cluster, region):
    with pytest.raises(ApplicationError, match="exists and is not a local cluster"):
        local_cluster_create(name=kube_cluster.name, region=region)
    assert Cluster.objects.get(name=kube_cluster.name).driver == ClusterDriver.KUBERNETES


def _secrets_of(kubeconfig: str) -> list[str]:
    """The credential values of a kubeconfig (tokens, certificate and key data)."""
    values = []
    for line in kubeconfig.splitlines():
        key, _, value = line.strip().partition(": ")
        if key.lstrip("- ") in {"token", "certificate-authority-data", "client-key-data", "password"}:
            values.append(value.strip())
    assert values
    return values


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["unauthorized", "bad_yaml"])
def test_a_refused_kubeconfig_is_not_rendered_back(admin_client, region, case):
    with run_kube_api(tls="valid") as api:
        kubeconfig = api.kubeconfig(token="tok-4f1d9c-never-shown")
        if case == "unauthorized":
            api.set_tokens("another-token")
        else:
            kubeconfig += "  broken: [unclosed\n"
        response = post_cluster(admin_client, region, kubeconfig)
        assert response.status_code == 200 and form_errors(response)
        pages = [response.content.decode()]
        api.set_tokens(DEFAULT_TOKEN)
        post_cluster(admin_client, region, api.kubeconfig(), name="gpu-b")
        cluster = Cluster.objects.get(name="gpu-b")
        api.set_tokens("another-token")
        replace = admin_client.post(
            reverse("deployments:cluster-detail", args=[cluster.pk]), {"kubeconfig": kubeconfig, "context": ""}
        )
        assert replace.status_code == 200 and form_errors(replace)
        pages.append(replace.content.decode())
    for page in pages:
        for secret in _secrets_of(kubeconfig):
            assert secret[:12] not in page
        assert re.search(r'<textarea name="kubeconfig"[^>]*>\s*</textarea>', page)
