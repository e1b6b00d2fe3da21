"""The local driver behind the platform's ``Driver`` protocol: processes on this machine, a synthetic GPU inventory.

The inventory of a local cluster is not observed but computed: the GPUs its live services hold (``gpu_count`` ×
``replicas`` of every service that should run) out of the synthetic nodes it advertises.
"""

from __future__ import annotations

from collections.abc import Generator

from django.db.models import F, Sum
from django.utils import timezone

from deployments.drivers.base import DriverError, Observed, ObservedReplica, ReplicaAccess
from deployments.drivers.local import converge, inventory, stop_all
from deployments.models import Cluster, ClusterHealth, Service, ServiceStatus


def held_gpus(cluster: Cluster) -> int:
    """GPUs held by the services of ``cluster`` that should run."""
    held = (
        Service.objects.filter(cluster=cluster, desired_running=True)
        .exclude(status__in=(ServiceStatus.DELETING, ServiceStatus.DELETED))
        .aggregate(n=Sum(F("gpu_count") * F("instances")))["n"]
    )
    return int(held or 0)


def refresh(cluster: Cluster) -> None:
    """Recompute the inventory and health of a local cluster (not saved)."""
    cluster.inventory = inventory(cluster.nodes, held_gpus(cluster))
    cluster.health = ClusterHealth.READY
    cluster.last_error = ""
    cluster.last_checked_at = timezone.now()


class LocalReading:
    def apply(self, cluster: Cluster) -> None:
        refresh(cluster)


class LocalDriver:
    has_kubeconfig = False

    def drive(self, cluster: Cluster, service: Service) -> Observed:
        if service.status == ServiceStatus.DELETING:
            return Observed(phase="Deleting", gone=stop_all(service))
        found = converge(service, service.desired_instances)
        return Observed(
            phase=found.phase,
            ready=found.ready,
            reason=found.reason,
            message=found.message,
            lost_since=found.lost_since,
            replicas=[ObservedReplica(r.name, r.base_url, r.ready, r.pid, r.port) for r in found.replicas],
        )

    def drive_cluster(
        self, cluster: Cluster, services: list[Service], counts: dict[str, int]
    ) -> Generator[tuple[Service, Observed | DriverError], None, None]:
        for service in services:
            outcome: Observed | DriverError
            try:
                outcome = self.drive(cluster, service)
            except DriverError as exc:
                outcome = exc
            yield service, outcome

    def check(self, cluster: Cluster) -> LocalReading:
        return LocalReading()  # nothing to probe: the inventory is computed under the row lock

    def reserve(self, cluster: Cluster, gpu_product: str, gpus: int) -> None:
        refresh(cluster)

    def release(self, cluster: Cluster, gpu_product: str, gpus: int, gpus_per_node: int) -> None:
        refresh(cluster)  # the inventory is computed from the services: a stopped one holds nothing

    def gpu_room(self, cluster: Cluster, service: Service, extra_instances: int) -> tuple[int, int]:
        # Computed from the services themselves, not the last inventory: counts what this service holds already.
        entry = (cluster.inventory or {}).get(service.gpu_product) or {}
        own = service.instances if service.desired_running else 0
        free = int(entry.get("allocatable", 0)) - held_gpus(cluster) + service.gpu_count * own
        return service.gpu_count * (extra_instances + own), free

    def replica_access(self, cluster: Cluster) -> ReplicaAccess:
        return {}, True, None  # plain HTTP on 127.0.0.1

    def remove_idle_namespaces(self, cluster: Cluster, keep: set[str]) -> list[str]:
        return []  # local processes have no namespaces
