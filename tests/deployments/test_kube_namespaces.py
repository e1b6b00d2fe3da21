"""What each organization namespace gets: GPU quota, network policy, model cache, hub tokens, image mirror."""

import base64

import pytest
from django.urls import reverse

from core.crypto import decrypt
from core.errors import ApplicationError
from deployments.drivers.kube import build_manifests, validate_manifests
from deployments.drivers.kube.driver import workload_spec
from deployments.drivers.kube.manifests import mirrored_image
from deployments.models import Service
from deployments.services import cluster_set_namespace_settings, service_create
from tests.deployments.conftest import make_workload_spec
from tests.deployments.helpers import passes, qwen

NS, NAME = "maas-acme", "svc-chat"


def by_kind(manifests):
    return {m["kind"]: m for m in manifests}


@pytest.mark.parametrize(
    "image, mirror, expected",
    [
        ("vllm/vllm-openai:v0.10.2", "harbor.example.com/proxy", "harbor.example.com/proxy/vllm/vllm-openai:v0.10.2"),
        ("nginx", "mirror.local:5000", "mirror.local:5000/library/nginx"),
        ("docker.io/lmsysorg/sglang:v0.4.6", "m.example.com", "m.example.com/lmsysorg/sglang:v0.4.6"),
        ("ghcr.io/org/img:1", "m.example.com/", "m.example.com/ghcr.io/org/img:1"),
        ("vllm/vllm-openai:v0.10.2", "", "vllm/vllm-openai:v0.10.2"),
    ],
)
def test_image_references_are_rewritten_to_the_mirror(image, mirror, expected):
    assert mirrored_image(image, mirror) == expected


@pytest.mark.parametrize("access_mode", ["proxy", "pod_ip", "ingress"])
def test_namespace_objects_validate_and_admit_only_the_access_path(access_mode):
    spec = make_workload_spec(
        gpu_quota=16,
        access_mode=access_mode,
        network_sources=("10.0.0.10/32", "fd00::1/128"),
        ingress_namespace="ingress-nginx",
        hub_tokens={"HF_TOKEN": "hf_secret", "MODELSCOPE_API_TOKEN": "ms_secret"},
        cache_volume={"pvc": "models"},
        image_mirror="harbor.example.com/proxy",
    )
    manifests = build_manifests(spec)
    assert [m["kind"] for m in manifests] == [
        "Namespace",
        "ResourceQuota",
        "NetworkPolicy",
        "Secret",
        "Deployment",
        "Service",
    ]
    validate_manifests(manifests)
    objects = by_kind(manifests)
    assert objects["ResourceQuota"]["spec"]["hard"] == {"requests.nvidia.com/gpu": "16"}
    policy = objects["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "maas"}}
    same_namespace, platform = policy["ingress"]
    assert same_namespace == {"from": [{"podSelector": {}}]}
    assert platform["ports"] == [{"protocol": "TCP", "port": 8000}]
    if access_mode == "ingress":
        assert platform["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        ]
    else:
        assert platform["from"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "fd00::1/128"}}]
    assert objects["Secret"]["stringData"] == {"HF_TOKEN": "hf_secret", "MODELSCOPE_API_TOKEN": "ms_secret"}
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "harbor.example.com/proxy/vllm/vllm-openai:v0.8.5"
    env = {e["name"]: e for e in container["env"]}
    for key in ("HF_TOKEN", "MODELSCOPE_API_TOKEN"):
        assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "maas-hub-tokens", "key": key}}
    volumes = objects["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}} in volumes
    assert "hf_secret" not in repr(spec)


@pytest.mark.django_db
def test_cluster_settings_reach_the_namespace_and_the_workload(org, alice, catalog, region, kube_cluster, kube_api):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="chat", instances=1)
    passes(service)
    # Default: an emptyDir cache, no tokens, no mirror, a 64-GPU quota, the nodes' addresses as the only sources.
    assert kube_api.get("resourcequotas", NS, "maas-gpus")["spec"]["hard"] == {"requests.nvidia.com/gpu": "64"}
    sources = kube_api.get("networkpolicies", NS, "maas-access", group="networking.k8s.io")["spec"]["ingress"][1]
    assert sources["from"] == [{"ipBlock": {"cidr": "192.168.0.10/32"}}, {"ipBlock": {"cidr": "192.168.0.11/32"}}]
    pod = kube_api.get("deployments", NS, NAME, group="apps")["spec"]["template"]["spec"]
    assert {"name": "model-cache", "emptyDir": {}} in pod["volumes"]
    assert kube_api.get("secrets", NS, "maas-hub-tokens") is None

    cluster_set_namespace_settings(
        cluster=kube_cluster,
        actor=None,
        org_gpu_quota=8,
        network_sources="10.1.0.0/16, 10.2.0.5",
        model_cache="hostPath",
        model_cache_path="/mnt/models",
        image_mirror="harbor.example.com/proxy",
        hf_token="hf_live_token",
        modelscope_token="ms_live_token",
    )
    kube_cluster.refresh_from_db()
    assert "hf_live_token" not in kube_cluster.hf_token_encrypted
    assert decrypt(kube_cluster.hf_token_encrypted) == "hf_live_token"
    service = passes(Service.objects.get(pk=service.pk))
    assert service.observed_generation == service.generation
    assert kube_api.get("resourcequotas", NS, "maas-gpus")["spec"]["hard"] == {"requests.nvidia.com/gpu": "8"}
    sources = kube_api.get("networkpolicies", NS, "maas-access", group="networking.k8s.io")["spec"]["ingress"][1]
    assert sources["from"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}, {"ipBlock": {"cidr": "10.2.0.5/32"}}]
    secret = kube_api.get("secrets", NS, "maas-hub-tokens")
    assert secret["stringData"] == {"HF_TOKEN": "hf_live_token", "MODELSCOPE_API_TOKEN": "ms_live_token"}
    pod = kube_api.get("deployments", NS, NAME, group="apps")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("harbor.example.com/proxy/vllm/vllm-openai:")
    assert {"name": "model-cache", "hostPath": {"path": "/mnt/models", "type": "DirectoryOrCreate"}} in pod["volumes"]
    validate_manifests(build_manifests(workload_spec(service)))

    # Removing the tokens removes the namespace's copy.
    cluster_set_namespace_settings(cluster=kube_cluster, actor=None, org_gpu_quota=8, hf_token="", modelscope_token="")
    passes(Service.objects.get(pk=service.pk))
    assert kube_api.get("secrets", NS, "maas-hub-tokens") is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"network_sources": "10.0.0.0/33"}, "network_sources"),
        ({"model_cache": "pvc", "model_cache_path": "Not_A_Name"}, "model_cache_path"),
        ({"model_cache": "hostPath", "model_cache_path": "relative/dir"}, "model_cache_path"),
        ({"image_mirror": "https://harbor.example.com"}, "image_mirror"),
        ({"org_gpu_quota": -1}, "org_gpu_quota"),
    ],
)
def test_bad_settings_are_refused_precisely_and_save_nothing(kube_cluster, changes, field):
    values = {"org_gpu_quota": 8, **changes}
    with pytest.raises(ApplicationError) as caught:
        cluster_set_namespace_settings(cluster=kube_cluster, actor=None, **values)
    assert caught.value.field == field
    kube_cluster.refresh_from_db()
    assert kube_cluster.org_gpu_quota == 64 and kube_cluster.model_cache == "emptyDir"


@pytest.mark.django_db
def test_the_cluster_page_form_never_shows_a_stored_token(admin_client, kube_cluster):
    url = reverse("deployments:cluster-namespace", args=[kube_cluster.pk])
    response = admin_client.post(
        url,
        {
            "org_gpu_quota": "32",
            "network_sources": "",
            "ingress_namespace": "ingress-nginx",
            "model_cache": "pvc",
            "model_cache_path": "models",
            "image_mirror": "",
            "hf_token": "hf_page_token",
            "modelscope_token": "",
        },
    )
    assert response.status_code == 302
    kube_cluster.refresh_from_db()
    assert (kube_cluster.org_gpu_quota, kube_cluster.model_cache_path) == (32, "models")
    page = admin_client.get(reverse("deployments:cluster-detail", args=[kube_cluster.pk])).content.decode()
    assert "hf_page_token" not in page and base64.b64encode(b"hf_page_token").decode() not in page
    assert "A Hugging Face token is stored." in page
