"""Regions, GPU clusters and model services (dedicated deployments of catalog models)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from core.querysets import OrgScopedQuerySet

dns1123_label = RegexValidator(
    r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$",
    _("Lowercase letters, digits and hyphens; start with a letter, end with a letter or digit; at most 40 characters."),
)

# The platform's own organization: its services serve the shared public models as ``public/<slug>``.
PUBLIC_NAMESPACE = "public"


class Region(models.Model):
    code = models.SlugField(max_length=40, unique=True, verbose_name=_("code"))  # e.g. cn-shanghai-2
    name_zh = models.CharField(max_length=60, verbose_name=_("name (Chinese)"))  # e.g. 上海二区
    name_en = models.CharField(max_length=60, verbose_name=_("name (English)"))  # e.g. Shanghai 2
    position = models.PositiveSmallIntegerField(default=0, verbose_name=_("position"))

    class Meta:
        verbose_name = _("region")
        verbose_name_plural = _("regions")
        ordering = ["position", "code"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.name_zh if (get_language() or "").startswith("zh") else self.name_en


class ClusterDriver(models.TextChoices):
    KUBERNETES = "kubernetes", "Kubernetes"
    LOCAL = "local", _("Local processes")


class AccessMode(models.TextChoices):
    PROXY = "proxy", _("API server proxy")
    POD_IP = "pod_ip", _("Pod IPs")
    INGRESS = "ingress", _("Ingress base URL")


class PreemptionPolicy(models.TextChoices):
    NEVER = "Never", _("Never: wait for free GPUs, evict nothing")
    PREEMPT = "PreemptLowerPriority", _("Preempt pods of lower priority")


# System classes start at 2,000,000,000 and user classes must stay at or below 1,000,000,000.
MAX_PRIORITY_VALUE = 1_000_000_000 - 1
DEFAULT_PRIORITY_VALUE = 1000


class ModelCache(models.TextChoices):
    EMPTY_DIR = "emptyDir", _("Pod-local (emptyDir): downloaded again by every new pod")
    PVC = "pvc", _("A PersistentVolumeClaim in each organization namespace")
    HOST_PATH = "hostPath", _("A directory on the node (hostPath)")


DEFAULT_ORG_GPU_QUOTA = 64


class ClusterHealth(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown")
    READY = "ready", _("Ready")
    DEGRADED = "degraded", _("Degraded")
    UNREACHABLE = "unreachable", _("Unreachable")


class Cluster(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=60, unique=True, verbose_name=_("name"))
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="clusters", verbose_name=_("region"))
    driver = models.CharField(
        max_length=16, choices=ClusterDriver.choices, default=ClusterDriver.KUBERNETES, verbose_name=_("driver")
    )
    # Fernet-encrypted kubeconfig (core.crypto); never rendered back.
    kubeconfig_encrypted = models.TextField(blank=True)
    context = models.CharField(max_length=200, blank=True)
    server_url = models.CharField(max_length=300, blank=True)
    server_version = models.CharField(max_length=60, blank=True, verbose_name=_("server version"))
    access_mode = models.CharField(max_length=16, choices=AccessMode.choices, default=AccessMode.PROXY)
    ingress_base_url = models.URLField(blank=True)
    cordoned = models.BooleanField(default=False, help_text=_("No new placements."), verbose_name=_("cordoned"))
    health = models.CharField(
        max_length=16, choices=ClusterHealth.choices, default=ClusterHealth.UNKNOWN, verbose_name=_("health")
    )
    last_error = models.TextField(blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last checked at"))
    # {gpu_product: {"total", "allocatable", "allocated", "free", "memory_mb", "nodes", "max_per_node"}}
    inventory = models.JSONField(default=dict, blank=True)
    nodes = models.JSONField(default=list, blank=True)
    checks = models.JSONField(default=list, blank=True)  # [{"key", "ok", "message", "fix"}]
    has_lws = models.BooleanField(default=False)
    # The PriorityClass the platform's pods run under: an admin's choice, by default one that evicts nobody.
    priority_value = models.IntegerField(
        default=DEFAULT_PRIORITY_VALUE,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_PRIORITY_VALUE)],
        help_text=_("Scheduling priority of the platform's pods; below 1,000,000,000 (system classes are above)."),
    )
    priority_preemption = models.CharField(
        max_length=24, choices=PreemptionPolicy.choices, default=PreemptionPolicy.NEVER
    )
    # What every organization namespace gets: a GPU quota, a network policy, the model cache, hub tokens, a mirror.
    org_gpu_quota = models.PositiveIntegerField(
        default=DEFAULT_ORG_GPU_QUOTA, help_text=_("GPUs the pods of one organization may request on this cluster.")
    )
    network_sources = models.TextField(
        blank=True,
        help_text=_(
            "CIDRs allowed to reach model pods (the API server, the gateway); empty: the cluster's node addresses."
        ),
    )
    ingress_namespace = models.CharField(max_length=63, default="ingress-nginx", blank=True)
    model_cache = models.CharField(max_length=16, choices=ModelCache.choices, default=ModelCache.EMPTY_DIR)
    model_cache_path = models.CharField(max_length=255, blank=True, help_text=_("PVC name or host directory."))
    # Fernet-encrypted (core.crypto); never rendered back.
    hf_token_encrypted = models.TextField(blank=True)
    modelscope_token_encrypted = models.TextField(blank=True)
    image_mirror = models.CharField(max_length=255, blank=True, help_text=_("e.g. harbor.example.com/proxy"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("cluster")
        verbose_name_plural = _("clusters")
        ordering = ["region__position", "name"]

    def network_source_list(self) -> list[str]:
        """The CIDRs the network policy admits: the configured ones, else every node's address."""
        configured = self.network_sources.replace(",", " ").split()
        if configured:
            return configured
        addresses = {n["address"] for n in self.nodes or [] if n.get("address")}
        return sorted(f"{a}/128" if ":" in a else f"{a}/32" for a in addresses)

    def __str__(self) -> str:
        return self.name


class BillingMode(models.TextChoices):
    PAYG = "payg", _("Pay as you go")
    SUBSCRIPTION = "subscription", _("Monthly subscription")


class ServiceStatus(models.TextChoices):
    PENDING = "Pending", _("Pending")
    CREATING = "Creating", _("Creating")
    STARTING = "Starting", _("Starting")
    RUNNING = "Running", _("Running")
    SCALING = "Scaling", _("Scaling")
    STOPPING = "Stopping", _("Stopping")
    STOPPED = "Stopped", _("Stopped")
    FAILED = "Failed", _("Failed")
    DELETING = "Deleting", _("Deleting")
    DELETED = "Deleted", _("Deleted")
    # Scaled to zero by its autoscaling policy: no instance runs (nothing is billed), the first request wakes it.
    IDLE = "Idle", _("Idle")


class ScalingMode(models.TextChoices):
    FIXED = "fixed", _("Fixed: the instances you set")
    AUTOSCALE = "autoscale", _("Autoscale: between a minimum and a maximum, following demand")


class ScalingTarget(models.TextChoices):
    """What the autoscaler keeps each instance at (``Service.target_value`` is in the unit of the choice)."""

    CONCURRENCY = "concurrency", _("Concurrent requests per instance")
    TTFT_P95 = "ttft_p95", _("Time to first token, p95 (ms)")
    KV_CACHE = "kv_cache", _("KV-cache usage (%)")


class ManualScale(models.TextChoices):
    """What scaling an autoscaling service by hand does to its policy, so that the autoscaler never undoes it."""

    FIXED = "fixed", _("Switch to fixed at this count: the autoscaler stops")
    BOUNDS = "bounds", _("Keep autoscaling: move the bounds to this count")


class EventKind(models.TextChoices):
    """What a ServiceEvent records; the stored values are read by billing (meter) and the console (timeline)."""

    STATUS = "status", _("Status change")
    SCALE = "scale", _("Scaling")
    METER = "meter", _("Billable instances")


class ServiceQuerySet(OrgScopedQuerySet):
    def live(self):
        return self.exclude(status=ServiceStatus.DELETED)


class Service(models.Model):
    """A dedicated deployment of a catalog model for one organization, callable as ``<namespace>/<name>``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(
        "maas.Organization", on_delete=models.PROTECT, related_name="services", verbose_name=_("organization")
    )
    name = models.CharField(_("service name"), max_length=40, validators=[dns1123_label])
    catalog_model = models.ForeignKey(
        "catalog.CatalogModel", on_delete=models.PROTECT, related_name="services", verbose_name=_("catalog model")
    )
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="services", verbose_name=_("region"))
    cluster = models.ForeignKey(
        Cluster, on_delete=models.PROTECT, null=True, blank=True, related_name="services", verbose_name=_("cluster")
    )
    # The variant picked at deploy time, copied so later catalog edits do not change a running service.
    variant_position = models.PositiveSmallIntegerField()
    runtime = models.CharField(max_length=16)
    runtime_version = models.CharField(max_length=32)
    image = models.CharField(max_length=200)
    gpu_product = models.CharField(max_length=100, blank=True)
    gpu_count = models.PositiveSmallIntegerField()  # per instance
    per_gpu_memory_gb = models.PositiveSmallIntegerField()
    nodes_per_instance = models.PositiveSmallIntegerField(default=1)
    cpu = models.PositiveSmallIntegerField()
    memory_gb = models.PositiveIntegerField()
    runtime_args = models.JSONField(default=list, blank=True)
    max_model_len = models.PositiveIntegerField()
    instances = models.PositiveSmallIntegerField(_("instances"))  # desired while running
    ready_instances = models.PositiveSmallIntegerField(default=0, verbose_name=_("ready instances"))
    billing_mode = models.CharField(max_length=16, choices=BillingMode.choices, default=BillingMode.PAYG)
    hourly_price = models.DecimalField(max_digits=14, decimal_places=6)  # per instance, at deploy/scale time
    # Subscription (包年包月) price per instance-month, snapshotted with hourly_price.
    monthly_price = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3)
    status = models.CharField(
        max_length=16, choices=ServiceStatus.choices, default=ServiceStatus.PENDING, verbose_name=_("status")
    )
    status_reason = models.CharField(max_length=100, blank=True)
    status_message = models.TextField(blank=True)  # in English; shown translated from the code when it has one
    status_message_code = models.CharField(max_length=64, blank=True)  # a deployments.texts.TIMELINE code
    status_message_params = models.JSONField(default=dict, blank=True)
    # Desired-state generation: bumped by every user change, copied to observed_generation by reconcile.
    generation = models.PositiveIntegerField(default=1)
    observed_generation = models.PositiveIntegerField(default=0)
    desired_running = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    running_since = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The billable instance count of the latest meter event, kept in the same transaction as that event.
    billed_instances = models.PositiveSmallIntegerField(default=0)
    # A reconcile pass holds the service until this time (claimed with a conditional UPDATE).
    reconcile_claimed_until = models.DateTimeField(null=True, blank=True)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    # Elastic serving: with ``autoscale`` the autoscaler sets ``instances`` between the bounds (0 only for
    # pay-as-you-go: the service goes Idle and wakes on a request); with ``fixed`` only a person changes it.
    scaling_mode = models.CharField(
        _("scaling mode"), max_length=16, choices=ScalingMode.choices, default=ScalingMode.FIXED
    )
    min_instances = models.PositiveSmallIntegerField(_("minimum instances"), default=1)
    max_instances = models.PositiveSmallIntegerField(_("maximum instances"), default=1)
    scaling_target = models.CharField(
        _("scaling target"), max_length=16, choices=ScalingTarget.choices, default=ScalingTarget.CONCURRENCY
    )
    target_value = models.PositiveIntegerField(_("target value"), default=8)
    scale_down_window_s = models.PositiveIntegerField(_("scale-down stabilisation window (s)"), default=300)
    idle_to_zero_s = models.PositiveIntegerField(_("idle time before scaling to zero (s)"), default=600)
    max_wake_wait_s = models.PositiveIntegerField(_("longest wait for a request while waking (s)"), default=120)
    last_scaled_at = models.DateTimeField(_("last scaled at"), null=True, blank=True)

    objects = ServiceQuerySet.as_manager()

    class Meta:
        verbose_name = _("service")
        verbose_name_plural = _("services")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "name"], condition=~models.Q(status="Deleted"), name="service_unique_live_name_per_org"
            ),
        ]
        indexes = [models.Index(fields=["status"]), models.Index(fields=["cluster", "status"])]

    def __str__(self) -> str:
        return self.model_id

    @property
    def model_id(self) -> str:
        return f"{self.org.namespace}/{self.name}"

    @property
    def k8s_name(self) -> str:
        return f"svc-{self.name}"

    def price_for(self, instances: int):
        """Hourly price of ``instances`` instances of this service."""
        return self.hourly_price * instances

    @property
    def desired_instances(self) -> int:
        return (
            self.instances
            if self.desired_running and self.status not in (ServiceStatus.DELETING, ServiceStatus.DELETED)
            else 0
        )

    @property
    def k8s_namespace(self) -> str:
        return f"maas-{self.org.namespace}"

    @property
    def status_reason_label(self) -> str:
        from deployments.texts import reason_label

        return reason_label(self.status_reason)

    @property
    def status_message_text(self) -> str:
        """The status message in the reader's language (a cluster's own text as it came)."""
        from deployments.texts import TIMELINE

        if not self.status_message_code:
            return self.status_message
        return TIMELINE.render(self.status_message_code, self.status_message_params, self.status_message)


class ServiceEvent(models.Model):
    """The service's timeline: status changes, scaling, failures with their real reasons."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="events", verbose_name=_("service"))
    created_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("created at"))
    kind = models.CharField(max_length=32, choices=EventKind.choices, verbose_name=_("kind"))
    status = models.CharField(max_length=16, blank=True, verbose_name=_("status"))
    reason = models.CharField(max_length=100, blank=True, verbose_name=_("reason"))
    message = models.TextField(blank=True)  # in English; shown translated from the code when it has one
    message_code = models.CharField(max_length=64, blank=True)  # a deployments.texts.TIMELINE code
    message_params = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Meter events (EventKind.METER): the number of billable (Running, ready) instances from ``created_at`` on.
    # Billing integrates these into instance-seconds; every change of that number writes exactly one.
    billable_instances = models.PositiveSmallIntegerField(null=True, blank=True, verbose_name=_("billable instances"))

    class Meta:
        verbose_name = _("service event")
        verbose_name_plural = _("service events")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["service", "kind", "created_at"])]

    @property
    def status_label(self) -> str:
        return str(ServiceStatus(self.status).label) if self.status in ServiceStatus.values else self.status

    @property
    def reason_label(self) -> str:
        from deployments.texts import reason_label

        return reason_label(self.reason)

    @property
    def message_text(self) -> str:
        """The message in the reader's language (a cluster's own text as it came)."""
        from deployments.texts import TIMELINE

        if not self.message_code:
            return self.message
        return TIMELINE.render(self.message_code, self.message_params, self.message)


class Replica(models.Model):
    """One observed instance of a service (a pod or a local process) and how the gateway reaches it.

    No credentials live here: for API-server proxy access the gateway adds the cluster's credentials at run time.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="replica_set")
    name = models.CharField(max_length=253)  # pod name or local process name
    base_url = models.CharField(max_length=500)  # root of the OpenAI-compatible server (without /v1)
    ready = models.BooleanField(default=False)
    pid = models.PositiveIntegerField(null=True, blank=True)  # local driver only
    port = models.PositiveIntegerField(null=True, blank=True)  # local driver only
    observed_at = models.DateTimeField(default=timezone.now)
    # Set when a scale-down chose this instance to leave: the gateway stops sending it requests and it is removed once
    # its in-flight requests are done (or after ``SERVICE_DRAIN_GRACE_S``).
    draining_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("replica")
        verbose_name_plural = _("replicas")
        ordering = ["service", "name"]
        constraints = [models.UniqueConstraint(fields=["service", "name"], name="replica_unique_name")]


class GpuPrice(models.Model):
    """What one GPU of a product costs per hour (and per month on a subscription) in a region."""

    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="gpu_prices", verbose_name=_("region"))
    gpu_product = models.CharField(max_length=100, verbose_name=_("GPU product"))  # as nvidia.com/gpu.product labels it
    hourly_price = models.DecimalField(max_digits=14, decimal_places=6, verbose_name=_("hourly price"))
    # Per GPU-month for subscriptions; empty: hourly × 24 × 30 × the subscription discount.
    monthly_price = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, verbose_name=_("monthly price")
    )
    currency = models.CharField(max_length=3, verbose_name=_("currency"))

    class Meta:
        verbose_name = _("GPU price")
        verbose_name_plural = _("GPU prices")
        ordering = ["region__position", "gpu_product"]
        constraints = [models.UniqueConstraint(fields=["region", "gpu_product"], name="gpuprice_unique_region_product")]

    def __str__(self) -> str:
        return f"{self.region.code} {self.gpu_product}: {self.hourly_price} {self.currency}/h"


class GpuQuota(models.Model):
    """The most GPUs an organization's services may hold in one region (all its instances, at their maximum when they
    autoscale); set by a platform admin. No row: the platform default (``DEPLOY_DEFAULT_GPU_QUOTA``)."""

    org = models.ForeignKey(
        "maas.Organization", on_delete=models.CASCADE, related_name="gpu_quotas", verbose_name=_("organization")
    )
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="gpu_quotas", verbose_name=_("region"))
    max_gpus = models.PositiveIntegerField(_("maximum GPUs"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("GPU quota")
        verbose_name_plural = _("GPU quotas")
        constraints = [models.UniqueConstraint(fields=["org", "region"], name="gpu_quota_one_per_org_region")]

    def __str__(self) -> str:
        return f"{self.org_id} {self.region_id}: {self.max_gpus}"
