"""Cluster drivers: how services become running replicas on a cluster.

``kube/`` drives Kubernetes clusters through their API server; ``local/`` runs each instance as a process on this
machine. Both implement ``deployments.drivers.base.Driver``; ``driver_for`` is the one place that picks a driver by
``Cluster.driver``, so the rest of the control plane never branches on it.
"""

from __future__ import annotations

from deployments.drivers.base import (
    ClusterReading,
    ClusterUnavailable,
    Driver,
    DriverError,
    Observed,
    ObservedReplica,
    ReplicaAccess,
)
from deployments.drivers.kube.driver import KubeDriver
from deployments.drivers.local.driver import LocalDriver
from deployments.models import Cluster, ClusterDriver

_DRIVERS: dict[str, Driver] = {ClusterDriver.KUBERNETES: KubeDriver(), ClusterDriver.LOCAL: LocalDriver()}


def driver_for(cluster: Cluster) -> Driver:
    return _DRIVERS[cluster.driver]


__all__ = [
    "ClusterReading",
    "ClusterUnavailable",
    "Driver",
    "DriverError",
    "Observed",
    "ObservedReplica",
    "ReplicaAccess",
    "driver_for",
]
