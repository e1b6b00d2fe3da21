"""The platform's Kubernetes integration: kubeconfigs, cluster probes, manifests and workloads.

Pure Python on top of the official `kubernetes` client; the rest of the platform speaks to clusters only
through the names exported here.
"""

from deployments.drivers.kube.config import KubeClient, KubeconfigInfo, api_client, parse_kubeconfig
from deployments.drivers.kube.errors import KubeError
from deployments.drivers.kube.inventory import ClusterProbe, GpuNode, PreflightCheck, probe_cluster
from deployments.drivers.kube.manifests import (
    SCHEMA_VERSIONS,
    WorkloadRef,
    WorkloadSpec,
    build_manifests,
    validate_manifests,
)
from deployments.drivers.kube.workloads import (
    PlatformObject,
    ReplicaEndpoint,
    WorkloadStatus,
    apply_priority_class,
    apply_workload,
    delete_namespace,
    delete_workload,
    list_platform_workloads,
    missing_services,
    observe_workload,
    observe_workloads,
    scale_workload,
    workload_drift,
)

__all__ = [
    "SCHEMA_VERSIONS",
    "ClusterProbe",
    "GpuNode",
    "KubeClient",
    "KubeError",
    "KubeconfigInfo",
    "PlatformObject",
    "PreflightCheck",
    "ReplicaEndpoint",
    "WorkloadRef",
    "WorkloadSpec",
    "WorkloadStatus",
    "api_client",
    "apply_priority_class",
    "apply_workload",
    "build_manifests",
    "delete_namespace",
    "delete_workload",
    "list_platform_workloads",
    "missing_services",
    "observe_workload",
    "observe_workloads",
    "parse_kubeconfig",
    "probe_cluster",
    "scale_workload",
    "validate_manifests",
    "workload_drift",
]
