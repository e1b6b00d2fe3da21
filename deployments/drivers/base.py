"""What the control plane asks of a cluster driver, in the platform's words.

The reconcile loop and the services speak to clusters only through ``Driver`` (chosen by ``cluster.driver`` in
``deployments.drivers.driver_for``): drive a service one step towards its desired state and say what was observed,
do that for a whole cluster at once, probe the cluster, account for GPUs taken by new instances, and tell the
gateway how to reach replicas. A driver that cannot do its work raises ``DriverError``; ``retryable`` errors are
retried with backoff by the Celery task, the others become the service's Failed status with ``reason``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.i18n import Text
    from deployments.models import Cluster, Service

# (headers, tls_verify, client_cert) for the gateway's requests to a cluster's replicas.
ReplicaAccess = tuple[dict[str, str], bool | str, tuple[str, str] | None]


class DriverError(Exception):
    """A cluster could not be driven; ``reason`` is a CamelCase word for the service's timeline.

    ``unreachable``: the cluster did not answer at all (the service's status stays, its message says so).
    """

    def __init__(self, reason: str, message: str, *, retryable: bool = False, unreachable: bool = False):
        super().__init__(message)
        self.reason, self.message, self.retryable, self.unreachable = reason, message, retryable, unreachable


class ClusterUnavailable(DriverError):
    """The service's cluster cannot be driven now (no cluster, undecryptable kubeconfig); not retried."""


@dataclass
class ObservedReplica:
    name: str
    base_url: str
    ready: bool
    pid: int | None = None
    port: int | None = None


@dataclass
class Observed:
    """What one step of a driver found: the workload's phase and its ready replicas."""

    phase: str  # Pending | Creating | Starting | Running | Scaling | Failed | Stopped | Missing | Deleting
    ready: int = 0
    reason: str = ""
    message: str | Text = ""  # a cluster's own text, or the platform's words (deployments.texts.TIMELINE)
    replicas: list[ObservedReplica] = field(default_factory=list)
    gone: bool = False  # deleting: nothing of the service is left
    waiting_on: str = ""  # short of Running with no reason: what it waits for (said when it makes no progress)
    # Instances found gone that were last seen running at this moment (local processes that died with the
    # platform): they stopped at some unknown time after it, so their billing ends here, not when found gone.
    lost_since: datetime | None = None


class ClusterReading(Protocol):
    """The result of probing a cluster, written onto its row while the caller holds the row lock."""

    def apply(self, cluster: Cluster) -> None: ...


class Driver(Protocol):
    """One way of running services (Kubernetes workloads, local processes)."""

    # Reached through a stored kubeconfig: it can be replaced, and the access mode applies.
    has_kubeconfig: bool

    def drive(self, cluster: Cluster, service: Service) -> Observed:
        """One idempotent step of ``service`` towards its desired state (removal while it is being deleted)."""
        ...

    def drive_cluster(
        self, cluster: Cluster, services: list[Service], counts: dict[str, int]
    ) -> Generator[tuple[Service, Observed | DriverError], None, None]:
        """``drive`` for every service of ``cluster``, batched where the driver can.

        ``counts`` gains what was done ("applied", "deleted"). Each outcome is yielded as soon as it is known, so the
        caller records it before the next one. A ``DriverError`` caused by one service (its apply refused) is yielded
        as that service's outcome and the batch goes on; only an error of the whole cluster (unreadable kubeconfig,
        a LIST refused) is raised.
        """
        ...

    def check(self, cluster: Cluster) -> ClusterReading:
        """Probe ``cluster`` with no lock held (network I/O); never raises for an unreachable cluster."""
        ...

    def reserve(self, cluster: Cluster, gpu_product: str, gpus: int) -> None:
        """Count ``gpus`` more as taken on the locked ``cluster`` row until the next check sees them."""
        ...

    def release(self, cluster: Cluster, gpu_product: str, gpus: int, gpus_per_node: int) -> None:
        """Count ``gpus`` as free again on the locked ``cluster`` row (a stop, a scale-down, a delete) at once."""
        ...

    def gpu_room(self, cluster: Cluster, service: Service, extra_instances: int) -> tuple[int, int]:
        """(needed, free) GPUs of the service's product for ``extra_instances`` more instances on ``cluster``."""
        ...

    def replica_access(self, cluster: Cluster) -> ReplicaAccess:
        """How the gateway reaches the replicas of ``cluster``: headers, TLS verification, client certificate."""
        ...

    def remove_idle_namespaces(self, cluster: Cluster, keep: set[str]) -> list[str]:
        """Remove the platform's per-organization spaces on ``cluster`` other than ``keep``; returns their names."""
        ...
