"""The one list of Kubernetes permissions the platform uses, the ClusterRole built from it, and its pre-flight check.

Every API call the driver, the probe and the gateway's pod proxy make is covered by an entry of ``PERMISSIONS``
(a test records every request the platform makes against the test API server and checks each against this list).
The ClusterRole an administrator applies is generated from the list, and the pre-flight asks the API server about
each verb with a SelfSubjectAccessReview, so the check, the fix text and the calls cannot drift apart.

Server-side apply is a PATCH, and creating an object through it also needs ``create``; deleting a workload lists its
pods to know when they are gone. Non-resource URLs (``/version``, API discovery) are open to every authenticated
user through the built-in ``system:discovery`` role and are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from deployments.drivers.kube.config import request
from deployments.drivers.kube.errors import CLUSTER_ROLE_NAME

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class Permission:
    group: str  # "" is the core API group
    resource: str  # "plural" or "plural/subresource"
    verbs: tuple[str, ...]
    why: str

    def names(self) -> list[str]:
        """Each verb as the pre-flight reports it, e.g. "patch deployments/scale.apps"."""
        suffix = f".{self.group}" if self.group else ""
        return [f"{verb} {self.resource}{suffix}" for verb in self.verbs]


PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "nodes", ("list",), "GPU inventory and node readiness"),
    Permission("", "pods", ("list",), "replica readiness, GPU usage of every pod, failure reasons"),
    Permission("", "pods/proxy", ("get", "create"), "the gateway's requests to replicas (proxy access mode)"),
    Permission("", "events", ("list",), "why a failing workload fails"),
    Permission(
        "",
        "namespaces",
        ("list", "create", "patch", "delete"),
        "one namespace per organization, removed with its last service",
    ),
    Permission(
        "",
        "services",
        ("list", "create", "patch", "delete"),
        "a ClusterIP Service per model service (list: one deleted behind the platform's back is put back)",
    ),
    Permission("", "resourcequotas", ("create", "patch"), "each organization namespace's GPU quota"),
    Permission("", "secrets", ("create", "patch", "delete"), "the model hub tokens of each organization namespace"),
    Permission(
        "networking.k8s.io",
        "networkpolicies",
        ("create", "patch"),
        "only the platform's access path reaches model pods",
    ),
    Permission("apps", "deployments", ("get", "list", "create", "patch", "delete"), "single-node model services"),
    Permission(
        "leaderworkerset.x-k8s.io",
        "leaderworkersets",
        ("get", "list", "create", "patch", "delete"),
        "multi-node model services",
    ),
    Permission(
        "scheduling.k8s.io",
        "priorityclasses",
        ("get", "create", "patch", "delete"),
        "the platform's PriorityClass (replaced when an admin changes it)",
    ),
    Permission("storage.k8s.io", "storageclasses", ("list",), "the model cache pre-flight check"),
    Permission("apiextensions.k8s.io", "customresourcedefinitions", ("get",), "whether LeaderWorkerSet is installed"),
    Permission("authorization.k8s.io", "selfsubjectaccessreviews", ("create",), "this pre-flight check"),
)


def covers(verb: str, group: str, resource: str) -> bool:
    """Whether the list grants ``verb`` on ``resource`` (with its subresource, if any) of ``group``."""
    return any(p.group == group and p.resource == resource and verb in p.verbs for p in PERMISSIONS)


def cluster_role(name: str = CLUSTER_ROLE_NAME) -> dict:
    """The ClusterRole granting exactly ``PERMISSIONS``."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: "maas"}},
        "rules": [{"apiGroups": [p.group], "resources": [p.resource], "verbs": list(p.verbs)} for p in PERMISSIONS],
    }


def cluster_role_binding(service_account: str, namespace: str, name: str = CLUSTER_ROLE_NAME) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: "maas"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


def cluster_role_yaml() -> str:
    """What an administrator applies (``kubectl apply -f``): the ClusterRole and a binding to a service account."""
    return yaml.safe_dump_all(
        [cluster_role(), cluster_role_binding("maas", "maas-system")], sort_keys=False, default_flow_style=False
    )


def can_i(
    client, verb: str, resource: str, *, group: str = "", namespace: str = "", subresource: str = ""
) -> tuple[bool, str]:
    """One SelfSubjectAccessReview; returns (allowed, reason)."""
    attributes = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attributes["namespace"] = namespace
    if subresource:
        attributes["subresource"] = subresource
    review = request(
        client,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
    )
    status = review.get("status") or {}
    return bool(status.get("allowed")), status.get("reason") or ""


def missing_permissions(client, *, namespace: str = "") -> list[str]:
    """Every verb of ``PERMISSIONS`` the client's credentials lack, asked one SelfSubjectAccessReview each."""
    missing = []
    for permission in PERMISSIONS:
        resource, _, subresource = permission.resource.partition("/")
        for verb, label in zip(permission.verbs, permission.names(), strict=True):
            allowed, _reason = can_i(
                client, verb, resource, group=permission.group, namespace=namespace, subresource=subresource
            )
            if not allowed:
                missing.append(label)
    return missing
