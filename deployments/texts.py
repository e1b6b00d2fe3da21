"""The words of a service's timeline, translated when shown (see ``core.i18n``).

``TIMELINE`` holds the messages the platform itself writes on a service (its status message and its events); a
message observed from a cluster (a Kubernetes event, a scheduler's explanation) is the cluster's text and is shown
as it came. ``REASONS`` labels the CamelCase reasons, the platform's own and the Kubernetes ones it passes on; a
reason it does not know is shown as its code.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy, pgettext_lazy

from core.i18n import Texts
from deployments.models import ScalingTarget, ServiceStatus

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
        "overdrawn_cap": ngettext_lazy(
            "the organization is overdrawn: autoscaling kept at the %(n)d instance its subscription covers",
            "the organization is overdrawn: autoscaling kept at the %(n)d instances its subscription covers",
            "n",
        ),
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
        "wake_no_capacity": _("a request could not wake it: %(error)s"),
        "process_restarted": ngettext_lazy(
            "restarted %(names)s: the process had exited",
            "restarted %(names)s: the processes had exited",
            "n",
        ),
        "policy_autoscale": _("autoscale between %(low)d and %(high)d instances; target: %(target)s %(value)d"),
        "policy_fixed": ngettext_lazy(
            "fixed at %(n)d instance: no autoscaling", "fixed at %(n)d instances: no autoscaling", "n"
        ),
        # The autoscaler's decisions (deployments.autoscaling): "a → n: why".
        "autoscale_demand": _(
            "%(a)d → %(n)d: %(demand)d requests in flight or waiting, target %(target)d per instance"
        ),
        "autoscale_down_demand": _(
            "%(a)d → %(n)d: at most %(demand)d requests in flight or waiting for %(window)d s, "
            "target %(target)d per instance"
        ),
        "autoscale_ttft": _("%(a)d → %(n)d: TTFT p95 %(p95)d ms, goal %(goal)d ms"),
        "autoscale_down_ttft": _("%(a)d → %(n)d: TTFT p95 at most %(p95)d ms for %(window)d s, goal %(goal)d ms"),
        "autoscale_kv_cache": _("%(a)d → %(n)d: KV cache %(usage)d%% used, target %(target)d%%"),
        "autoscale_down_kv_cache": _(
            "%(a)d → %(n)d: KV cache at most %(usage)d%% used for %(window)d s, target %(target)d%%"
        ),
        "autoscale_down_quiet": _("%(a)d → %(n)d: no requests for %(window)d s"),
        "autoscale_panic": _(
            "%(a)d → %(n)d: burst of %(demand)d requests in flight or waiting, at least twice what runs; "
            "no scale-down for %(hold)d s"
        ),
        "autoscale_idle": ngettext_lazy("%(a)d → 0: idle %(n)d min", "%(a)d → 0: idle %(n)d min", "n"),
        "autoscale_wake": _("0 → %(n)d: woken by a request"),
        "autoscale_bounds": _("%(a)d → %(n)d: the policy's bounds are %(low)d to %(high)d instances"),
        "autoscale_no_gpus": ngettext_lazy(
            "cannot add instances (%(a)d → %(want)d): %(error)s; trying again in %(n)d second",
            "cannot add instances (%(a)d → %(want)d): %(error)s; trying again in %(n)d seconds",
            "n",
        ),
    },
    choices={"status": ServiceStatus, "target": ScalingTarget},
)


REASONS = {
    # The platform's own.
    "Created": pgettext_lazy("timeline reason", "Created"),
    "Scaled": pgettext_lazy("timeline reason", "Scaled"),
    "ScaleRequested": pgettext_lazy("timeline reason", "Scale requested"),
    "PolicyChanged": pgettext_lazy("timeline reason", "Scaling policy changed"),
    "StartRequested": pgettext_lazy("timeline reason", "Start requested"),
    "StopRequested": pgettext_lazy("timeline reason", "Stop requested"),
    "DeleteRequested": pgettext_lazy("timeline reason", "Delete requested"),
    "ClusterDrained": pgettext_lazy("timeline reason", "Cluster drained"),
    "Overdrawn": pgettext_lazy("timeline reason", "Balance overdrawn"),
    "NoProgress": pgettext_lazy("timeline reason", "No progress"),
    "NoCluster": pgettext_lazy("timeline reason", "No cluster"),
    "ClusterUnreachable": pgettext_lazy("timeline reason", "Cluster unreachable"),
    "ClusterInvalidKubeconfig": pgettext_lazy("timeline reason", "Invalid kubeconfig"),
    "ClusterTimeout": pgettext_lazy("timeline reason", "Cluster timed out"),
    "ClusterTls": pgettext_lazy("timeline reason", "Cluster TLS error"),
    "ClusterUnauthorized": pgettext_lazy("timeline reason", "Cluster refused the credentials"),
    "ClusterForbidden": pgettext_lazy("timeline reason", "Cluster permission missing"),
    "ClusterNotFound": pgettext_lazy("timeline reason", "Not found on the cluster"),
    "ClusterConflict": pgettext_lazy("timeline reason", "Cluster conflict"),
    "ClusterInvalid": pgettext_lazy("timeline reason", "Refused by the cluster"),
    "ClusterServerError": pgettext_lazy("timeline reason", "Cluster server error"),
    "ProcessRestarted": pgettext_lazy("timeline reason", "Process restarted"),
    "WaitingForGPUs": pgettext_lazy("timeline reason", "Waiting for GPUs"),
    "Autoscaled": pgettext_lazy("timeline reason", "Autoscaled"),
    "ScaledToZero": pgettext_lazy("timeline reason", "Scaled to zero"),
    "Woken": pgettext_lazy("timeline reason", "Woken by a request"),
    "NoCapacityToScale": pgettext_lazy("timeline reason", "No GPUs to scale up"),
    "WakeFailed": pgettext_lazy("timeline reason", "Could not wake"),
    # Kubernetes' words, passed on from pods and workloads.
    "Unschedulable": pgettext_lazy("timeline reason", "Cannot be scheduled"),
    "ImagePullBackOff": pgettext_lazy("timeline reason", "Image pull failing"),
    "ErrImagePull": pgettext_lazy("timeline reason", "Image pull failed"),
    "InvalidImageName": pgettext_lazy("timeline reason", "Invalid image name"),
    "CrashLoopBackOff": pgettext_lazy("timeline reason", "Crashing repeatedly"),
    "CreateContainerConfigError": pgettext_lazy("timeline reason", "Container configuration error"),
    "CreateContainerError": pgettext_lazy("timeline reason", "Container could not be created"),
    "RunContainerError": pgettext_lazy("timeline reason", "Container could not start"),
    "OOMKilled": pgettext_lazy("timeline reason", "Out of memory"),
    "ProgressDeadlineExceeded": pgettext_lazy("timeline reason", "Rollout deadline exceeded"),
    "ReplicaFailure": pgettext_lazy("timeline reason", "Pods could not be created"),
}


def reason_label(reason: str) -> str:
    """The translated label of a timeline reason; an unknown one (a newer Kubernetes word) as it came."""
    label = REASONS.get(reason)
    return str(label) if label is not None else reason
