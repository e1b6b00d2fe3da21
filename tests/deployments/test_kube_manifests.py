"""Manifests for a service: valid against two official schema versions, and saying what the platform means."""

import pytest

from deployments.drivers.kube import SCHEMA_VERSIONS, build_manifests, validate_manifests
from tests.deployments.conftest import make_workload_spec


def by_kind(manifests):
    return {m["kind"]: m for m in manifests}


def container_of(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_schema_versions_are_two_shipped_official_versions():
    import kubernetes_validate.utils

    shipped = kubernetes_validate.utils.all_versions()
    assert len(SCHEMA_VERSIONS) == 2
    assert all(v in shipped for v in SCHEMA_VERSIONS)


@pytest.mark.parametrize("runtime", ["vllm", "sglang"])
def test_single_node_manifests_validate_against_official_schemas(runtime):
    manifests = build_manifests(
        make_workload_spec(
            runtime=runtime, image="lmsysorg/sglang:v0.4.6" if runtime == "sglang" else "vllm/vllm-openai:v0.8.5"
        )
    )
    assert [m["kind"] for m in manifests] == ["Namespace", "NetworkPolicy", "Deployment", "Service"]
    validate_manifests(manifests)
    validate_manifests(manifests, versions=("1.32.0", "1.33.0"))


def test_vllm_deployment_runs_the_openai_server_with_platform_flags():
    spec = make_workload_spec(
        gpu_count=4,
        gpus_per_node=4,
        replicas=2,
        custom_args=["--enable-prefix-caching"],
        cache_volume={"host_path": "/mnt/hf-cache"},
    )
    objects = by_kind(build_manifests(spec))
    deployment = objects["Deployment"]
    container = container_of(deployment)
    assert container["command"] + container["args"] == [
        "python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name",
        "u-8105f7322477/my-qwen",
        "--tensor-parallel-size",
        "4",
        "--max-model-len",
        "8192",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--enable-prefix-caching",
    ]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 * 60
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "model-cache", "mountPath": "/root/.cache/huggingface"} in container["volumeMounts"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "maas-online-inference"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert {"name": "model-cache", "hostPath": {"path": "/mnt/hf-cache", "type": "DirectoryOrCreate"}} in pod["volumes"]
    assert deployment["spec"]["replicas"] == 2
    for manifest in (deployment, objects["Service"]):
        labels = manifest["metadata"]["labels"]
        assert labels["maas.io/service-id"] == spec.service_id
        assert labels["maas.io/org"] == "maas-u-8105f7322477"
        assert labels["app.kubernetes.io/managed-by"] == "maas"
        assert labels["app.kubernetes.io/name"] == "svc-3f2a9c1e"
        assert manifest["metadata"]["annotations"]["maas.io/served-model-name"] == "u-8105f7322477/my-qwen"
    assert objects["Namespace"]["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "maas",
        "maas.io/org": "maas-u-8105f7322477",
    }
    assert objects["Service"]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    validate_manifests(list(objects.values()))


def test_modelscope_source_switches_the_hub():
    spec = make_workload_spec(model_source="modelscope:qwen/Qwen2.5-7B-Instruct", cache_volume={"pvc": "model-cache"})
    deployment = by_kind(build_manifests(spec))["Deployment"]
    container = container_of(deployment)
    assert container["args"][container["args"].index("--model") + 1] == "qwen/Qwen2.5-7B-Instruct"
    assert {"name": "VLLM_USE_MODELSCOPE", "value": "True"} in container["env"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}} in deployment["spec"][
        "template"
    ]["spec"]["volumes"]


def test_sglang_launch_server_arguments():
    spec = make_workload_spec(runtime="sglang", image="lmsysorg/sglang:v0.4.6", gpu_count=2, gpus_per_node=2)
    container = container_of(by_kind(build_manifests(spec))["Deployment"])
    assert container["command"] + container["args"] == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name",
        "u-8105f7322477/my-qwen",
        "--tp",
        "2",
        "--context-length",
        "8192",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_multi_node_vllm_is_a_leader_worker_set_in_the_ray_shape():
    spec = make_workload_spec(gpu_count=16, gpus_per_node=8, nodes_per_instance=2, replicas=1)
    objects = by_kind(build_manifests(spec))
    assert set(objects) == {"Namespace", "NetworkPolicy", "LeaderWorkerSet", "Service"}
    lws = objects["LeaderWorkerSet"]
    template = lws["spec"]["leaderWorkerTemplate"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert template["size"] == 2
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    script = leader["args"][1]
    assert script.startswith("ray start --head --port=6379 && ")
    assert "--tensor-parallel-size 8" in script and "--pipeline-parallel-size 2" in script
    assert "--distributed-executor-backend ray" in script
    assert worker["args"] == ["-c", "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert objects["Service"]["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    validate_manifests(list(objects.values()))


def test_leader_worker_set_sanity_checks_catch_broken_shapes():
    spec = make_workload_spec(gpu_count=16, gpus_per_node=8, nodes_per_instance=2)
    manifests = build_manifests(spec)
    lws = by_kind(manifests)["LeaderWorkerSet"]
    lws["spec"]["leaderWorkerTemplate"]["size"] = 0
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["gpus"] = 8
    with pytest.raises(ValueError) as caught:
        validate_manifests(manifests)
    text = str(caught.value)
    assert "LeaderWorkerSet/svc-3f2a9c1e: spec.leaderWorkerTemplate.size must be a positive integer" in text
    assert (
        "spec.leaderWorkerTemplate.workerTemplate: Kubernetes 1.37.0: template.spec.containers.0: "
        "Additional properties are not allowed ('gpus' was unexpected)"
    ) in text


def test_schema_violations_are_reported_per_version():
    manifests = build_manifests(make_workload_spec())
    container_of(by_kind(manifests)["Deployment"])["gpu"] = 1
    with pytest.raises(ValueError) as caught:
        validate_manifests(manifests)
    text = str(caught.value)
    for version in SCHEMA_VERSIONS:
        assert (
            f"Deployment/svc-3f2a9c1e: Kubernetes {version}: spec.template.spec.containers.0: "
            "Additional properties are not allowed ('gpu' was unexpected)"
        ) in text


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"name": "Svc_1"}, "name 'Svc_1' must be a lowercase DNS-1035 label"),
        ({"gpu_count": 3, "gpus_per_node": 2}, "gpu_count 3 != gpus_per_node 2 × nodes_per_instance 1"),
        ({"custom_args": ["--port=9000"]}, "custom argument --port is set by the platform"),
        ({"runtime": "tgi"}, "runtime 'tgi' is not one of vllm, sglang"),
        ({"shm_gb": 64}, "shm_gb 64 must be below memory_gb 64"),
    ],
)
def test_invalid_specs_are_refused(overrides, problem):
    with pytest.raises(ValueError, match="invalid workload spec") as caught:
        make_workload_spec(**overrides)
    assert problem in str(caught.value)
