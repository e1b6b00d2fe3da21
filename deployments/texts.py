"""The words of a service's timeline, translated when shown (see ``core.i18n``).

``TIMELINE`` holds the messages the platform itself writes on a service (its status message and its events); a
message observed from a cluster (a Kubernetes event, a scheduler's explanation) is the cluster's text and is shown
as it came. ``REASONS`` labels the CamelCase reasons, the platform's own and the Kubernetes ones it passes on; a
reason it does not know is shown as its code.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from core.i18n import Texts
from deployments.models import ServiceStatus

TIMELINE = Texts(
    {
        "created": ngettext_lazy(
            "%(n)d instance of %(model)s on %(cluster)s (%(gpus)d× %(product)s per instance)",
            "%(n)d instances of %(model)s on %(cluster)s (%(gpus)d× %(product)s per instance)",
            "n",
        ),
        "scaled": ngettext_lazy("%(a)d → %(n)d instance", "%(a)d → %(n)d instances", "n"),
        "billable": ngettext_lazy("%(n)d billable instance", "%(n)d billable instances", "n"),
        "drained": _("cluster %(cluster)s is being drained by an administrator"),
        "overdrawn": ngettext_lazy(
            "the organization's spendable balance has been at or below zero for more than %(n)d hour",
            "the organization's spendable balance has been at or below zero for more than %(n)d hours",
            "n",
        ),
        "unreachable": _("cluster %(cluster)s is unreachable: %(error)s"),
        "no_progress": ngettext_lazy(
            "%(status)s for %(n)d minute without progress: %(waiting_on)s",
            "%(status)s for %(n)d minutes without progress: %(waiting_on)s",
            "n",
        ),
        "no_progress_unexplained": ngettext_lazy(
            "%(status)s for %(n)d minute without progress: the cluster reports nothing that explains it",
            "%(status)s for %(n)d minutes without progress: the cluster reports nothing that explains it",
            "n",
        ),
        "waiting_for_gpus": _("waiting for GPUs: %(scheduler)s"),
        "unschedulable": _("no node of %(cluster)s can hold %(gpus)d× %(product)s: %(scheduler)s"),
        "process_restarted": ngettext_lazy(
            "restarted %(names)s: the process had exited",
            "restarted %(names)s: the processes had exited",
            "n",
        ),
    },
    choices={"status": ServiceStatus},
)

REASONS = {
    # The platform's own.
    "Created": _("Created"),
    "Scaled": _("Scaled"),
    "ScaleRequested": _("Scale requested"),
    "StartRequested": _("Start requested"),
    "StopRequested": _("Stop requested"),
    "DeleteRequested": _("Delete requested"),
    "ClusterDrained": _("Cluster drained"),
    "Overdrawn": _("Balance overdrawn"),
    "NoProgress": _("No progress"),
    "NoCluster": _("No cluster"),
    "ClusterUnreachable": _("Cluster unreachable"),
    "ClusterInvalidKubeconfig": _("Invalid kubeconfig"),
    "ClusterTimeout": _("Cluster timed out"),
    "ClusterTls": _("Cluster TLS error"),
    "ClusterUnauthorized": _("Cluster refused the credentials"),
    "ClusterForbidden": _("Cluster permission missing"),
    "ClusterNotFound": _("Not found on the cluster"),
    "ClusterConflict": _("Cluster conflict"),
    "ClusterInvalid": _("Refused by the cluster"),
    "ClusterServerError": _("Cluster server error"),
    "ProcessRestarted": _("Process restarted"),
    "WaitingForGPUs": _("Waiting for GPUs"),
    # Kubernetes' words, passed on from pods and workloads.
    "Unschedulable": _("Cannot be scheduled"),
    "ImagePullBackOff": _("Image pull failing"),
    "ErrImagePull": _("Image pull failed"),
    "InvalidImageName": _("Invalid image name"),
    "CrashLoopBackOff": _("Crashing repeatedly"),
    "CreateContainerConfigError": _("Container configuration error"),
    "CreateContainerError": _("Container could not be created"),
    "RunContainerError": _("Container could not start"),
    "OOMKilled": _("Out of memory"),
    "ProgressDeadlineExceeded": _("Rollout deadline exceeded"),
    "ReplicaFailure": _("Pods could not be created"),
}


def reason_label(reason: str) -> str:
    """The translated label of a timeline reason; an unknown one (a newer Kubernetes word) as it came."""
    label = REASONS.get(reason)
    return str(label) if label is not None else reason
