"""Writes of the deployments app: cluster onboarding and checks, and the life cycle of model services.

User actions only record desired state (instances, running or not, deleting) and bump ``generation``; the reconcile
loop (deployments.reconcile) makes the cluster match and records what it observes.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from core.crypto import SecretDecryptError, decrypt, encrypt
from core.errors import ApplicationError
from core.i18n import Text
from deployments.drivers import driver_for
from deployments.drivers import local as local_driver
from deployments.drivers.kube import (
    ClusterProbe,
    KubeError,
    api_client,
    apply_priority_class,
    parse_kubeconfig,
    probe_cluster,
)
from deployments.drivers.kube.driver import PROBE_TIMEOUT_S, apply_probe
from deployments.drivers.local.driver import refresh as local_refresh
from deployments.events import EventKind, event_record, meter_set, status_set
from deployments.models import (
    DEFAULT_PRIORITY_VALUE,
    MAX_PRIORITY_VALUE,
    PUBLIC_NAMESPACE,
    AccessMode,
    BillingMode,
    Cluster,
    ClusterDriver,
    GpuQuota,
    ManualScale,
    ModelCache,
    PreemptionPolicy,
    Region,
    ScalingMode,
    Service,
    ServiceStatus,
)
from deployments.placement import instance_prices, place
from deployments.policy import MAX_INSTANCES as MAX_INSTANCES  # forms and serializers read the bound here
from deployments.policy import (
    ScalingPolicy,
    manual_scale_outcome,
    policy_check,
    quota_check,
    quota_gpus,
)
from deployments.reconcile import NO_CAPACITY_TO_SCALE
from deployments.signals import subscription_cover_requested
from deployments.texts import TIMELINE
from tenancy.permissions import require, require_platform_staff
from tenancy.services import audit_record

log = logging.getLogger(__name__)

SERVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
CLUSTER_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,58}[a-z0-9])?$")


def _enqueue_reconcile(service_id: UUID) -> None:
    from deployments.tasks import reconcile_service_task

    transaction.on_commit(lambda: reconcile_service_task.delay(str(service_id)))


# --- clusters -----------------------------------------------------------------------------------------------


def _kube_error(exc: KubeError) -> ApplicationError:
    return ApplicationError(exc.message, code=exc.kind, field="kubeconfig")


def _probe(
    kubeconfig: str,
    context: str | None,
    *,
    priority_value: int = DEFAULT_PRIORITY_VALUE,
    priority_preemption: str = PreemptionPolicy.NEVER,
) -> tuple[ClusterProbe, str]:
    """Validate the kubeconfig and probe the cluster; ApplicationError with the precise reason otherwise."""
    if not (kubeconfig or "").strip():
        raise ApplicationError(_("Paste or upload a kubeconfig."), code="invalid_kubeconfig", field="kubeconfig")
    try:
        info = parse_kubeconfig(kubeconfig)
    except KubeError as exc:
        raise _kube_error(exc) from None
    context = context or info.current_context or (info.contexts[0] if len(info.contexts) == 1 else None)
    if not context:
        raise ApplicationError(
            _("The kubeconfig has several contexts and no current-context: pick one."),
            code="invalid_kubeconfig",
            field="context",
        )
    if context not in info.contexts:
        raise ApplicationError(
            _("The kubeconfig has no context “%(c)s” (it has: %(all)s).")
            % {"c": context, "all": ", ".join(info.contexts) or "none"},
            code="invalid_kubeconfig",
            field="context",
        )
    if context in info.unusable:
        raise ApplicationError(
            _("Context “%(c)s” cannot be used: %(why)s") % {"c": context, "why": info.unusable[context]},
            code="invalid_kubeconfig",
            field="context",
        )
    try:
        probe = probe_cluster(
            kubeconfig,
            context,
            timeout=PROBE_TIMEOUT_S,
            priority_value=priority_value,
            preemption_policy=priority_preemption,
        )
    except KubeError as exc:
        raise _kube_error(exc) from None
    return probe, context


def _ensure_priority_class(kubeconfig: str, context: str, *, value: int, preemption: str) -> bool:
    client = api_client(kubeconfig, context, timeout=PROBE_TIMEOUT_S)
    try:
        return apply_priority_class(client, value=value, preemption_policy=preemption)
    except KubeError as exc:
        raise _kube_error(exc) from None
    finally:
        client.close()


def _validate_priority(value: int, preemption: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_PRIORITY_VALUE:
        raise ApplicationError(
            _("The priority must be a whole number from 0 to %(max)d (system classes are above it).")
            % {"max": MAX_PRIORITY_VALUE},
            field="priority_value",
        )
    if preemption not in PreemptionPolicy.values:
        raise ApplicationError(
            _("The preemption policy is Never or PreemptLowerPriority."), field="priority_preemption"
        )


def _validate_access(access_mode: str, ingress_base_url: str) -> None:
    if access_mode not in AccessMode.values:
        raise ApplicationError(_("Unknown access mode."), field="access_mode")
    if access_mode == AccessMode.INGRESS and not ingress_base_url:
        raise ApplicationError(_("The ingress access mode needs the ingress base URL."), field="ingress_base_url")


def cluster_register(
    *,
    actor,
    name: str,
    region: Region,
    kubeconfig: str,
    context: str | None = None,
    access_mode: str = AccessMode.PROXY,
    ingress_base_url: str = "",
    priority_value: int = DEFAULT_PRIORITY_VALUE,
    priority_preemption: str = PreemptionPolicy.NEVER,
) -> Cluster:
    """Onboard a Kubernetes cluster: probe it first; any connection or credential problem saves nothing."""
    name = (name or "").strip().lower()
    if not CLUSTER_NAME_RE.match(name):
        raise ApplicationError(_("Cluster names are lowercase letters, digits and hyphens (at most 60)."), field="name")
    if Cluster.objects.filter(name=name).exists():
        raise ApplicationError(_("A cluster named “%(name)s” exists already.") % {"name": name}, field="name")
    _validate_access(access_mode, ingress_base_url)
    _validate_priority(priority_value, priority_preemption)
    probe, context = _probe(kubeconfig, context, priority_value=priority_value, priority_preemption=priority_preemption)
    if probe.ready:
        _ensure_priority_class(kubeconfig, context, value=priority_value, preemption=priority_preemption)
    with transaction.atomic():
        cluster = Cluster(
            name=name,
            region=region,
            driver=ClusterDriver.KUBERNETES,
            kubeconfig_encrypted=encrypt(kubeconfig),
            context=context,
            access_mode=access_mode,
            ingress_base_url=ingress_base_url,
            priority_value=priority_value,
            priority_preemption=priority_preemption,
        )
        apply_probe(cluster, probe)
        try:
            with transaction.atomic():
                cluster.save()
        except IntegrityError:
            raise ApplicationError(
                _("A cluster named “%(name)s” exists already.") % {"name": name}, field="name"
            ) from None
        audit_record(
            org=None,
            actor=actor,
            action="cluster.register",
            target=cluster,
            data={
                "name": name,
                "region": region.code,
                "server": cluster.server_url,
                "context": context,
                "priority_value": priority_value,
                "priority_preemption": priority_preemption,
            },
        )
    return cluster


def cluster_replace_kubeconfig(*, cluster: Cluster, actor, kubeconfig: str, context: str | None = None) -> Cluster:
    if not driver_for(cluster).has_kubeconfig:
        raise ApplicationError(_("Only Kubernetes clusters have a kubeconfig."), field="kubeconfig")
    probe, context = _probe(
        kubeconfig, context, priority_value=cluster.priority_value, priority_preemption=cluster.priority_preemption
    )
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        cluster.kubeconfig_encrypted = encrypt(kubeconfig)
        cluster.context = context
        apply_probe(cluster, probe)
        cluster.save()
        audit_record(
            org=None,
            actor=actor,
            action="cluster.kubeconfig_replace",
            target=cluster,
            data={"server": cluster.server_url, "context": context},
        )
    return cluster


def cluster_set_priority(*, cluster: Cluster, actor, priority_value: int, priority_preemption: str) -> Cluster:
    """Change the PriorityClass the platform's pods run under; the cluster's class is replaced, then re-checked."""
    if not driver_for(cluster).has_kubeconfig:
        raise ApplicationError(_("Only Kubernetes clusters have a priority class."), field="priority_value")
    _validate_priority(priority_value, priority_preemption)
    try:
        text = decrypt(cluster.kubeconfig_encrypted)
    except SecretDecryptError as exc:
        raise ApplicationError(str(exc), field="priority_value") from None
    # Network I/O first, no lock held: a refused change saves nothing.
    _ensure_priority_class(text, cluster.context, value=priority_value, preemption=priority_preemption)
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        before = {"priority_value": locked.priority_value, "priority_preemption": locked.priority_preemption}
        locked.priority_value, locked.priority_preemption = priority_value, priority_preemption
        locked.save(update_fields=["priority_value", "priority_preemption"])
        audit_record(
            org=None,
            actor=actor,
            action="cluster.priority",
            target=locked,
            data={"before": before, "priority_value": priority_value, "priority_preemption": priority_preemption},
        )
    return cluster_check(cluster_id=cluster.pk)


_MIRROR_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._/]*[a-z0-9])?)?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_ORG_GPU_QUOTA = 100_000


def _clean_namespace_settings(
    cluster: Cluster,
    *,
    org_gpu_quota: int,
    network_sources: str,
    ingress_namespace: str,
    model_cache: str,
    model_cache_path: str,
    image_mirror: str,
) -> dict[str, Any]:
    if not isinstance(org_gpu_quota, int) or not 0 <= org_gpu_quota <= MAX_ORG_GPU_QUOTA:
        raise ApplicationError(
            _("The GPU quota is a whole number from 0 to %(max)d.") % {"max": MAX_ORG_GPU_QUOTA}, field="org_gpu_quota"
        )
    cidrs = []
    for word in (network_sources or "").replace(",", " ").split():
        try:
            cidrs.append(str(ipaddress.ip_network(word, strict=False)))
        except ValueError:
            raise ApplicationError(
                _("“%(value)s” is not an IP address or CIDR.") % {"value": word}, field="network_sources"
            ) from None
    ingress_namespace = (ingress_namespace or "").strip()
    if ingress_namespace and not _DNS_LABEL_RE.match(ingress_namespace):
        raise ApplicationError(_("The ingress namespace is not a valid namespace name."), field="ingress_namespace")
    if cluster.access_mode == AccessMode.INGRESS and not ingress_namespace:
        raise ApplicationError(
            _("The ingress access mode needs the ingress controller's namespace."), field="ingress_namespace"
        )
    path = (model_cache_path or "").strip()
    if model_cache not in ModelCache.values:
        raise ApplicationError(_("Unknown model cache."), field="model_cache")
    if model_cache == ModelCache.PVC and not _DNS_SUBDOMAIN_RE.match(path):
        raise ApplicationError(_("Name the PersistentVolumeClaim (a valid object name)."), field="model_cache_path")
    if model_cache == ModelCache.HOST_PATH and not (path.startswith("/") and ".." not in path.split("/")):
        raise ApplicationError(_("The host directory must be an absolute path."), field="model_cache_path")
    if model_cache == ModelCache.EMPTY_DIR:
        path = ""
    mirror = (image_mirror or "").strip().rstrip("/")
    if mirror and not _MIRROR_RE.match(mirror):
        raise ApplicationError(
            _("The registry mirror is a host[:port][/path] without a scheme, e.g. harbor.example.com/proxy."),
            field="image_mirror",
        )
    return {
        "org_gpu_quota": org_gpu_quota,
        "network_sources": "\n".join(cidrs),
        "ingress_namespace": ingress_namespace,
        "model_cache": model_cache,
        "model_cache_path": path,
        "image_mirror": mirror,
    }


def cluster_set_namespace_settings(
    *,
    cluster: Cluster,
    actor,
    org_gpu_quota: int,
    network_sources: str = "",
    ingress_namespace: str = "ingress-nginx",
    model_cache: str = ModelCache.EMPTY_DIR,
    model_cache_path: str = "",
    image_mirror: str = "",
    hf_token: str | None = None,
    modelscope_token: str | None = None,
) -> Cluster:
    """What each organization namespace on ``cluster`` gets; every service there is applied again with it.

    A token of None keeps the stored one, "" removes it; tokens are stored encrypted and never rendered back.
    """
    if not driver_for(cluster).has_kubeconfig:
        raise ApplicationError(_("Only Kubernetes clusters have namespaces."), field="org_gpu_quota")
    values = _clean_namespace_settings(
        cluster,
        org_gpu_quota=org_gpu_quota,
        network_sources=network_sources,
        ingress_namespace=ingress_namespace,
        model_cache=model_cache,
        model_cache_path=model_cache_path,
        image_mirror=image_mirror,
    )
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        for key, value in values.items():
            setattr(locked, key, value)
        changed_tokens = []
        for field_name, token in (("hf_token_encrypted", hf_token), ("modelscope_token_encrypted", modelscope_token)):
            if token is not None:
                setattr(locked, field_name, encrypt(token.strip()) if token.strip() else "")
                changed_tokens.append(field_name.removesuffix("_encrypted"))
        locked.save(update_fields=[*values, "hf_token_encrypted", "modelscope_token_encrypted"])
        # Level-triggered: the next pass applies every live service's namespace and workload with the new settings.
        live = Service.objects.filter(cluster=locked).exclude(
            status__in=(ServiceStatus.DELETING, ServiceStatus.DELETED)
        )
        bumped = live.update(generation=F("generation") + 1)
        audit_record(
            org=None,
            actor=actor,
            action="cluster.namespace_settings",
            target=locked,
            data={**values, "tokens_changed": changed_tokens, "services_reapplied": bumped},
        )
        if bumped:
            from deployments.tasks import reconcile_cluster_task

            cluster_id = str(locked.pk)
            transaction.on_commit(lambda: reconcile_cluster_task.delay(cluster_id))
    return locked


def local_cluster_create(
    *,
    actor: Any = None,
    name: str,
    region: Region,
    gpus: int = local_driver.DEFAULT_LOCAL_GPUS,
    gpu_memory_gb: int = local_driver.DEFAULT_LOCAL_GPU_MEMORY_GB,
) -> Cluster:
    """A cluster of local processes (no Kubernetes) advertising a synthetic GPU inventory; idempotent by name."""
    with transaction.atomic():
        try:
            cluster, created = Cluster.objects.select_for_update().get_or_create(
                name=name, driver=ClusterDriver.LOCAL, defaults={"region": region}
            )
        except IntegrityError:  # the name is taken by a cluster of another driver
            raise ApplicationError(
                _("Cluster %(name)s exists and is not a local cluster.") % {"name": name}, field="name"
            ) from None
        cluster.nodes = local_driver.synthetic_nodes(gpus=gpus, memory_gb=gpu_memory_gb)
        cluster.server_url = "local"
        cluster.server_version = "local"
        cluster.checks = [
            {"key": "local", "ok": True, "message": _("local processes on 127.0.0.1"), "fix": "", "blocking": True}
        ]
        local_refresh(cluster)
        cluster.save()
        if created:
            audit_record(
                org=None,
                actor=actor,
                action="cluster.register",
                target=cluster,
                data={"name": name, "region": region.code, "driver": ClusterDriver.LOCAL.value},
            )
    return cluster


def cluster_check(*, cluster_id: UUID | str) -> Cluster:
    """Beat: reachable, nodes Ready, GPUs total/allocated/free per type. Never raises for an unreachable cluster."""
    cluster = Cluster.objects.get(pk=cluster_id)
    reading = driver_for(cluster).check(cluster)  # network I/O: no lock held
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster_id)
        reading.apply(cluster)
        cluster.save()
    return cluster


def cluster_set_cordoned(*, cluster: Cluster, actor, cordoned: bool) -> Cluster:
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        cluster.cordoned = cordoned
        cluster.save(update_fields=["cordoned"])
        audit_record(org=None, actor=actor, action="cluster.cordon" if cordoned else "cluster.uncordon", target=cluster)
    return cluster


def cluster_drain(*, cluster: Cluster, actor) -> int:
    """Cordon the cluster and stop every service on it (their owners start them again elsewhere); returns how many."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        cluster.cordoned = True
        cluster.save(update_fields=["cordoned"])
        services = list(
            Service.objects.select_for_update()
            .filter(cluster=cluster, desired_running=True)
            .exclude(status__in=(ServiceStatus.DELETING, ServiceStatus.DELETED))
        )
        for service in services:
            _stop(
                service,
                actor=actor,
                reason="ClusterDrained",
                message=TIMELINE("drained", cluster=cluster.name),
            )
        audit_record(org=None, actor=actor, action="cluster.drain", target=cluster, data={"stopped": len(services)})
    return len(services)


# --- services -----------------------------------------------------------------------------------------------


def _check_instances(instances) -> int:
    if not isinstance(instances, int) or isinstance(instances, bool) or not 1 <= instances <= MAX_INSTANCES:
        raise ApplicationError(
            _("Instances must be a whole number from 1 to %(max)d.") % {"max": MAX_INSTANCES}, field="instances"
        )
    return instances


def _reserve(cluster_id: UUID, product: str, gpus: int) -> None:
    """Take GPUs off the cluster's inventory until the next check sees the pods (locks the cluster row)."""
    cluster = Cluster.objects.select_for_update().get(pk=cluster_id)
    driver_for(cluster).reserve(cluster, product, gpus)
    cluster.save(update_fields=["inventory", "health", "last_error", "last_checked_at"])


def _release(service: Service, instances: int) -> None:
    """Give ``instances`` of ``service`` back to its cluster's inventory at once (locks the cluster row).

    Stopped, scaled-down and deleted instances free their GPUs now, not at the next check a minute later: a deploy
    right after a stop is accepted (its pods wait in Pending until the old ones are gone).
    """
    if not service.cluster_id or instances <= 0:
        return
    cluster = Cluster.objects.select_for_update().get(pk=service.cluster_id)
    gpus_per_node = service.gpu_count // max(service.nodes_per_instance, 1)
    driver_for(cluster).release(cluster, service.gpu_product, service.gpu_count * instances, gpus_per_node)
    cluster.save(update_fields=["inventory", "health", "last_error", "last_checked_at"])


def subscription_cover(*, service: Service, instances: int, actor: Any) -> None:
    """Have billing cover ``instances`` of a subscription-mode service, in the caller's transaction.

    Billing's refusal (``ApplicationError``: the balance does not cover it) propagates and rolls the caller back;
    with no billing connected, subscription mode is refused rather than given away.
    """
    answered = subscription_cover_requested.send(sender=Service, service=service, instances=instances, actor=actor)
    if not answered:
        raise ApplicationError(
            _("Subscription billing is not available: a subscription-mode service cannot be deployed or scaled up."),
            code="billing_unavailable",
            field="billing_mode",
        )


def _service_new(
    *, org, catalog_model, region: Region, name: str, placement, instances: int, billing_mode: str, actor
) -> Service:
    """The unsaved row of a new service placed by ``placement``, priced at the region's price now."""
    variant = placement.variant
    hourly, monthly, currency = instance_prices(region, placement.gpu_product, variant.gpu_count)
    return Service(
        org=org,
        name=name,
        catalog_model=catalog_model,
        region=region,
        cluster=placement.cluster,
        variant_position=variant.position,
        runtime=variant.runtime,
        runtime_version=placement.runtime_version,
        image=placement.image,
        gpu_product=placement.gpu_product,
        gpu_count=variant.gpu_count,
        per_gpu_memory_gb=variant.per_gpu_memory_gb,
        nodes_per_instance=placement.nodes_per_instance,
        cpu=variant.cpu,
        memory_gb=variant.memory_gb,
        runtime_args=list(variant.custom_runtime_args or []),
        max_model_len=catalog_model.context_length,
        instances=instances,
        billing_mode=billing_mode,
        hourly_price=hourly,
        monthly_price=monthly,
        currency=currency,
        created_by=actor if getattr(actor, "pk", None) else None,
    )


def service_create(
    *,
    org,
    actor,
    catalog_model,
    region: Region,
    name: str,
    instances: int = 1,
    billing_mode: str = BillingMode.PAYG,
    policy: ScalingPolicy | None = None,
) -> Service:
    """Deploy ``catalog_model`` in ``region``: the platform picks the variant and the cluster.

    Without ``policy`` the service is fixed at ``instances`` (its bounds both ``instances``); an autoscaling policy
    starts it at ``instances`` brought within its bounds, and at least one instance (its first minutes show it runs).
    """
    require(actor, org, "service.create")
    name = (name or "").strip()
    if not SERVICE_NAME_RE.match(name):
        raise ApplicationError(
            _(
                "Service names are lowercase letters, digits and hyphens, start with a letter, end "
                "with a letter or digit, at most 40 characters."
            ),
            field="name",
        )
    _check_instances(instances)
    if billing_mode not in BillingMode.values:
        raise ApplicationError(_("Unknown billing mode."), field="billing_mode")
    policy = policy or ScalingPolicy(min_instances=instances, max_instances=instances)
    policy_check(policy, billing_mode=billing_mode)
    if policy.autoscale:
        instances = min(max(instances, policy.min_instances, 1), policy.max_instances)
    with transaction.atomic():
        # Deploys into one region are serialized so two of them cannot take the same free GPUs.
        Region.objects.select_for_update().get(pk=region.pk)
        if Service.objects.for_org(org).live().filter(name=name).exists():
            raise ApplicationError(
                _("Your organization already has a service named “%(name)s”.") % {"name": name},
                field="name",
                code="duplicate",
            )
        placement = place(
            catalog_model, Region.objects.prefetch_related("clusters").get(pk=region.pk), instances=instances
        )
        variant = placement.variant
        quota_check(
            org=org,
            region=region,
            gpus=quota_gpus(
                scaling_mode=policy.scaling_mode,
                instances=instances,
                max_instances=policy.max_instances,
                gpu_count=variant.gpu_count,
            ),
            field="max_instances" if policy.autoscale else "instances",
        )
        service = _service_new(
            org=org,
            catalog_model=catalog_model,
            region=region,
            name=name,
            placement=placement,
            instances=instances,
            billing_mode=billing_mode,
            actor=actor,
        )
        policy.apply_to(service)
        hourly = service.hourly_price
        try:
            with transaction.atomic():
                service.save()
        except IntegrityError:
            raise ApplicationError(
                _("Your organization already has a service named “%(name)s”.") % {"name": name},
                field="name",
                code="duplicate",
            ) from None
        event_record(
            service=service,
            kind=EventKind.STATUS,
            status=ServiceStatus.PENDING,
            reason="Created",
            actor=actor,
            message=TIMELINE(
                "created",
                n=instances,
                model=catalog_model.name,
                cluster=placement.cluster.name,
                gpus=variant.gpu_count,
                product=placement.gpu_product,
            ),
        )
        if policy.autoscale:
            _policy_event(service, actor=actor)
        _reserve(placement.cluster.pk, placement.gpu_product, variant.gpu_count * instances)
        if billing_mode == BillingMode.SUBSCRIPTION:
            # 包年包月: a month per instance is paid up front; without the funds nothing is deployed.
            subscription_cover(service=service, instances=instances, actor=actor)
        audit_record(
            org=org,
            actor=actor,
            action="service.create",
            target=service,
            data={
                "name": name,
                "model": catalog_model.slug,
                "region": region.code,
                "instances": instances,
                "cluster": placement.cluster.name,
                "hourly_price": str(hourly),
                "billing_mode": billing_mode,
                "policy": policy.as_dict(),
            },
        )
        _enqueue_reconcile(service.pk)
    return service


def _quota_check_for(service: Service, policy: ScalingPolicy, instances: int, *, field: str) -> None:
    """Raise unless ``service`` under ``policy`` at ``instances`` keeps its org within the region's GPU quota."""
    quota_check(
        org=service.org,
        region=service.region,
        gpus=quota_gpus(
            scaling_mode=policy.scaling_mode,
            instances=instances,
            max_instances=policy.max_instances,
            gpu_count=service.gpu_count,
        ),
        exclude=service.pk,
        field=field,
    )


def _locked(service: Service) -> Service:
    return Service.objects.select_for_update(of=("self",)).select_related("org", "cluster", "region").get(pk=service.pk)


def _require_live(service: Service) -> None:
    if service.status in (ServiceStatus.DELETING, ServiceStatus.DELETED):
        raise ApplicationError(_("This service is being deleted."), code="deleted", status=409)


def _capacity_for(service: Service, extra_instances: int) -> None:
    """Raise unless the service's cluster has room for ``extra_instances`` more instances."""
    cluster = service.cluster
    if cluster is None or extra_instances <= 0:
        return
    if cluster.cordoned:
        raise ApplicationError(
            _("Cluster %(name)s is cordoned: no new instances can be placed there.") % {"name": cluster.name},
            code="no_capacity",
            field="instances",
        )
    needed, free = driver_for(cluster).gpu_room(cluster, service, extra_instances)
    if free < needed:
        raise ApplicationError(
            _("Not enough free GPUs on %(cluster)s: %(needed)d× %(product)s needed, %(free)d free.")
            % {"cluster": cluster.name, "needed": needed, "product": service.gpu_product, "free": max(free, 0)},
            code="no_capacity",
            field="instances",
        )


def _lock_region(service: Service) -> None:
    """Writes that change what a service counts against its organization's GPU quota are serialized per region
    (as deploys are), so two of them cannot both take the quota's last GPUs. Taken before the service's row."""
    Region.objects.select_for_update().filter(pk=service.region_id).first()


def _instances_set(service: Service, *, actor, instances: int) -> None:
    """Change a locked service's desired instances: capacity, prices, timeline, meter, GPUs and billing follow."""
    before = service.instances
    if service.desired_running:
        _capacity_for(service, instances - before)
    hourly, monthly, currency = instance_prices(service.region, service.gpu_product, service.gpu_count)
    service.instances = instances
    service.hourly_price, service.monthly_price, service.currency = hourly, monthly, currency
    service.generation += 1
    service.last_scaled_at = timezone.now()
    event_record(
        service=service,
        kind=EventKind.SCALE,
        reason="Scaled",
        actor=actor,
        message=TIMELINE("scaled", a=before, n=instances),
    )
    if service.desired_running and service.status in (ServiceStatus.RUNNING, ServiceStatus.IDLE):
        status_set(
            service=service,
            # An Idle service (at zero) starts again; a running one scales.
            status=ServiceStatus.STARTING if before == 0 else ServiceStatus.SCALING,
            reason="ScaleRequested",
            actor=actor,
            message=TIMELINE("scaled", a=before, n=instances),
        )
    if service.desired_running and instances < service.billed_instances:
        meter_set(service=service, instances=instances)  # billing stops for removed instances at once
    service.save()
    if service.billing_mode == BillingMode.SUBSCRIPTION and instances > before:
        subscription_cover(service=service, instances=instances, actor=actor)  # prorated for the added ones
    if service.desired_running and service.cluster_id:
        _reserve(service.cluster_id, service.gpu_product, service.gpu_count * max(instances - before, 0))
        _release(service, before - instances)
    _enqueue_reconcile(service.pk)


def _policy_event(service: Service, *, actor) -> None:
    """The service's policy, as it is now, on its timeline."""
    if service.scaling_mode == ScalingMode.AUTOSCALE:
        message = TIMELINE(
            "policy_autoscale",
            low=service.min_instances,
            high=service.max_instances,
            target=service.scaling_target,
            value=service.target_value,
        )
    else:
        message = TIMELINE("policy_fixed", n=service.instances)
    event_record(service=service, kind=EventKind.SCALE, reason="PolicyChanged", actor=actor, message=message)


def service_autoscale_cap(*, service_id: UUID | str, high: int, reason: str, message: Text) -> Service | None:
    """Lower an autoscaling service's maximum to ``high`` (and its minimum with it) and its instances within it, on
    the platform's behalf (no actor): billing's enforcement keeps an overdrawn organization's subscription services
    at what the subscription covers. The new bounds go on the timeline with ``reason``; a person raises them again
    (a policy change) once the balance is back. None when nothing was above ``high``."""
    with transaction.atomic():
        service = _locked_by_id(service_id)
        if (
            service is None
            or service.scaling_mode != ScalingMode.AUTOSCALE
            or service.max_instances <= high
            or service.status in (ServiceStatus.DELETING, ServiceStatus.DELETED)
        ):
            return None
        service.max_instances = high
        service.min_instances = min(service.min_instances, high)
        service.generation += 1
        event_record(service=service, kind=EventKind.SCALE, reason=reason, message=message)
        service.save()
    if service.instances > high:
        service_autoscale(service_id=service_id, instances=high, message=message)
    return Service.objects.get(pk=service_id)


def _locked_by_id(service_id: UUID | str) -> Service | None:
    rows = Service.objects.select_for_update(of=("self",)).select_related("org", "cluster", "region")
    return rows.filter(pk=service_id).first()


def service_scale(*, service: Service, actor, instances: int, on_autoscale: str = ManualScale.FIXED) -> Service:
    """Set the service's instances by hand. An autoscaling service is switched to fixed at that count, or (with
    ``on_autoscale="bounds"``) keeps autoscaling with its bounds moved to the count (``policy.manual_scale_outcome``),
    so the autoscaler never undoes it."""
    require(actor, service.org, "service.scale")
    _check_instances(instances)
    if on_autoscale not in ManualScale.values:
        raise ApplicationError(_("Choose fixed or bounds for an autoscaling service."), field="on_autoscale")
    with transaction.atomic():
        _lock_region(service)
        service = _locked(service)
        _require_live(service)
        before_policy = ScalingPolicy.of(service)
        policy = manual_scale_outcome(service, instances, on_autoscale)
        before = service.instances
        if instances == before and policy == before_policy:
            return service
        policy_check(policy, billing_mode=service.billing_mode)
        _quota_check_for(service, policy, instances, field="instances")
        policy.apply_to(service)
        if instances != before:
            _instances_set(service, actor=actor, instances=instances)
        else:
            service.save(update_fields=ScalingPolicy.names())
        if policy != before_policy:
            _policy_event(service, actor=actor)
        data: dict[str, Any] = {"from": before, "to": instances, "hourly_price": str(service.hourly_price)}
        if policy != before_policy:
            data["policy"] = {"before": before_policy.as_dict(), "after": policy.as_dict()}
        audit_record(org=service.org, actor=actor, action="service.scale", target=service, data=data)
    return service


def _require_policy_actor(actor, org) -> None:
    """The platform's own public services are set by platform staff (their organization has no members)."""
    if org.namespace == PUBLIC_NAMESPACE:
        require_platform_staff(actor)
    else:
        require(actor, org, "service.policy")


def service_set_policy(*, service: Service, actor, policy: ScalingPolicy) -> Service:
    """Set the service's scaling policy (``deployments.policy`` holds the rules), audited and on its timeline.

    Switching to autoscale brings the instances within the new bounds at once; switching to fixed keeps the count
    the service has (at least one).
    """
    _require_policy_actor(actor, service.org)
    policy_check(policy, billing_mode=service.billing_mode)
    with transaction.atomic():
        _lock_region(service)
        service = _locked(service)
        _require_live(service)
        before_policy = ScalingPolicy.of(service)
        before = service.instances
        if policy.autoscale:
            instances = min(max(before, policy.min_instances), policy.max_instances)
        else:
            instances = max(before, 1)
        if policy == before_policy and instances == before:
            return service
        _quota_check_for(service, policy, instances, field="max_instances" if policy.autoscale else "scaling_mode")
        policy.apply_to(service)
        if instances != before:
            _instances_set(service, actor=actor, instances=instances)
        else:
            service.save(update_fields=ScalingPolicy.names())
        if policy != before_policy:
            _policy_event(service, actor=actor)
        audit_record(
            org=service.org,
            actor=actor,
            action="service.policy",
            target=service,
            data={"before": before_policy.as_dict(), "after": policy.as_dict(), "instances": [before, instances]},
        )
    return service


def gpu_quota_set(*, actor, org, region: Region, max_gpus: int | None) -> GpuQuota | None:
    """Set the most GPUs ``org`` may hold in ``region`` (None: back to the default); platform staff only, audited.

    A quota below what the organization holds now stops nothing: its services keep running, and deploys, scale-ups
    and larger maximums are refused until it is back within the quota.
    """
    require_platform_staff(actor)
    if max_gpus is not None and (not isinstance(max_gpus, int) or not 0 <= max_gpus <= MAX_ORG_GPU_QUOTA):
        raise ApplicationError(
            _("The GPU quota is a whole number from 0 to %(max)d.") % {"max": MAX_ORG_GPU_QUOTA}, field="max_gpus"
        )
    with transaction.atomic():
        Region.objects.select_for_update().get(pk=region.pk)
        row = GpuQuota.objects.filter(org=org, region=region).first()
        before = row.max_gpus if row is not None else None
        if before == max_gpus:
            return row
        if max_gpus is None:
            GpuQuota.objects.filter(org=org, region=region).delete()
            row = None
        elif row is None:
            row = GpuQuota.objects.create(org=org, region=region, max_gpus=max_gpus)
        else:
            row.max_gpus = max_gpus
            row.save(update_fields=["max_gpus", "updated_at"])
        audit_record(
            org=org,
            actor=actor,
            action="gpu_quota.set",
            target=row,
            data={"region": region.code, "before": before, "after": max_gpus},
        )
    return row


def service_autoscale(*, service_id: UUID | str, instances: int, message: Text) -> Service | None:
    """Apply the autoscaler's decision (``deployments.autoscaling``): ``instances`` of a running autoscaled service.

    The same path as a manual scale (desired state, generation, GPUs taken or given back, the reconcile task), written
    by the platform rather than a person: no permission check or audit row, the decision and its reason go on the
    timeline (``message``). 0 makes the service Idle (its instances drain, then nothing runs and nothing is billed);
    from 0 it wakes (Starting, then Running once an instance is Ready). Raises ``ApplicationError`` (code
    ``no_capacity``) when added instances cannot be placed; None when the service no longer autoscales or runs.
    """
    if not isinstance(instances, int) or not 0 <= instances <= MAX_INSTANCES:
        raise ApplicationError(_("Instances must be a whole number from 0 to %(max)d.") % {"max": MAX_INSTANCES})
    with transaction.atomic():
        rows = Service.objects.select_for_update(of=("self",)).select_related("org", "cluster", "region")
        service = rows.filter(pk=service_id).first()
        if (
            service is None
            or service.scaling_mode != ScalingMode.AUTOSCALE
            or not service.desired_running
            or service.status in (ServiceStatus.DELETING, ServiceStatus.DELETED)
        ):
            return None
        before = service.instances
        if instances == before:
            return service
        _capacity_for(service, instances - before)
        service.instances = instances
        service.generation += 1
        service.last_scaled_at = timezone.now()
        reason = "ScaledToZero" if instances == 0 else "Autoscaled"
        if before == 0 and message.code == "autoscale_wake":
            reason = "Woken"
        event_record(service=service, kind=EventKind.SCALE, reason=reason, message=message)
        if before == 0:
            status_set(service=service, status=ServiceStatus.STARTING, reason=reason, message=message)
        elif service.status in (ServiceStatus.RUNNING, ServiceStatus.IDLE) or service.status_reason == (
            NO_CAPACITY_TO_SCALE
        ):
            status_set(service=service, status=ServiceStatus.SCALING, reason=reason, message=message)
        if instances < service.billed_instances:
            meter_set(service=service, instances=instances)  # billing stops for removed instances at once
        service.save()
        if service.cluster_id:
            _reserve(service.cluster_id, service.gpu_product, service.gpu_count * max(instances - before, 0))
            _release(service, before - instances)
        _enqueue_reconcile(service.pk)
    return service


def service_autoscale_blocked(*, service_id: UUID | str, want: int, error: str, retry_in_s: int) -> None:
    """Say on the service that the autoscaler cannot add the instances it wants (no GPUs), and when it tries again.

    The status stays; its reason (``NoCapacityToScale``) stays through reconcile passes until the autoscaler clears it
    (``service_autoscale_unblocked``): the scale-up went through, or demand no longer asks for it.
    """
    with transaction.atomic():
        service = Service.objects.select_for_update(of=("self",)).filter(pk=service_id).first()
        if service is None or service.status in (ServiceStatus.DELETING, ServiceStatus.DELETED):
            return
        message = TIMELINE("autoscale_no_gpus", a=service.instances, want=want, error=error, n=retry_in_s)
        if status_set(service=service, status=service.status, reason=NO_CAPACITY_TO_SCALE, message=message):
            service.save()


def service_autoscale_unblocked(*, service_id: UUID | str) -> None:
    """Clear ``NoCapacityToScale`` from the service's status (see ``service_autoscale_blocked``)."""
    with transaction.atomic():
        service = Service.objects.select_for_update(of=("self",)).filter(pk=service_id).first()
        if service is None or service.status_reason != NO_CAPACITY_TO_SCALE:
            return
        if status_set(service=service, status=service.status, reason="", message=""):
            service.save()


def _stop(service: Service, *, actor, reason: str, message: str | Text = "") -> None:
    service.desired_running = False
    service.generation += 1
    status_set(service=service, status=ServiceStatus.STOPPING, reason=reason, message=message, actor=actor)
    meter_set(service=service, instances=0)
    service.save()
    _release(service, service.instances)
    _enqueue_reconcile(service.pk)


def service_stop(*, service: Service, actor: Any, reason: str = "StopRequested", message: str | Text = "") -> Service:
    """Stop the service's instances (it keeps its place and can start again); ``reason`` goes on its timeline."""
    require(actor, service.org, "service.stop")
    with transaction.atomic():
        service = _locked(service)
        _require_live(service)
        if not service.desired_running:
            return service
        _stop(service, actor=actor, reason=reason, message=message)
        audit_record(org=service.org, actor=actor, action="service.stop", target=service)
    return service


def service_start(*, service: Service, actor) -> Service:
    require(actor, service.org, "service.start")
    with transaction.atomic():
        service = _locked(service)
        _require_live(service)
        if service.desired_running:
            return service
        _capacity_for(service, service.instances)
        service.desired_running = True
        service.generation += 1
        status_set(service=service, status=ServiceStatus.PENDING, reason="StartRequested", actor=actor)
        service.save()
        if service.cluster_id:
            _reserve(service.cluster_id, service.gpu_product, service.gpu_count * service.instances)
        audit_record(org=service.org, actor=actor, action="service.start", target=service)
        _enqueue_reconcile(service.pk)
    return service


def service_delete(*, service: Service, actor) -> Service:
    require(actor, service.org, "service.delete")
    with transaction.atomic():
        service = _locked(service)
        if service.status in (ServiceStatus.DELETING, ServiceStatus.DELETED):
            return service
        service.generation += 1
        status_set(service=service, status=ServiceStatus.DELETING, reason="DeleteRequested", actor=actor)
        meter_set(service=service, instances=0)
        service.save()
        _release(service, service.instances if service.desired_running else 0)
        audit_record(org=service.org, actor=actor, action="service.delete", target=service, data={"name": service.name})
        _enqueue_reconcile(service.pk)
    return service


# --- scale to zero: public services that start Idle, and waking on a request ----------------------------------------


def public_service_create(
    *, org, catalog_model, region: Region, name: str, min_instances: int, max_instances: int
) -> Service:
    """A public (platform) service of ``catalog_model`` that autoscales between the bounds, created by the platform.

    At ``min_instances`` 0 it is created Idle: placed (the model must fit the region now, so that a wake can succeed)
    but holding no GPU and running nothing until a request wakes it (``service_wake``); its cost is the platform's.
    """
    if not isinstance(min_instances, int) or not 0 <= min_instances <= max_instances <= MAX_INSTANCES:
        raise ApplicationError(
            _("The instance bounds must satisfy 0 ≤ minimum ≤ maximum ≤ %(max)d.") % {"max": MAX_INSTANCES},
            field="min_instances",
        )
    if not SERVICE_NAME_RE.match(name or ""):
        raise ApplicationError(_("Not a valid service name."), field="name")
    with transaction.atomic():
        Region.objects.select_for_update().get(pk=region.pk)
        placement = place(
            catalog_model,
            Region.objects.prefetch_related("clusters").get(pk=region.pk),
            instances=max(min_instances, 1),
        )
        service = _service_new(
            org=org,
            catalog_model=catalog_model,
            region=region,
            name=name,
            placement=placement,
            instances=min_instances,
            billing_mode=BillingMode.PAYG,
            actor=None,
        )
        service.scaling_mode = ScalingMode.AUTOSCALE
        service.min_instances, service.max_instances = min_instances, max_instances
        if min_instances == 0:
            service.status = ServiceStatus.IDLE
        service.save()
        event_record(
            service=service,
            kind=EventKind.STATUS,
            status=service.status,
            reason="Created",
            message=TIMELINE(
                "created",
                n=min_instances,
                model=catalog_model.name,
                cluster=placement.cluster.name,
                gpus=placement.variant.gpu_count,
                product=placement.gpu_product,
            ),
        )
        if min_instances:
            _reserve(placement.cluster.pk, placement.gpu_product, placement.variant.gpu_count * min_instances)
        audit_record(
            org=org,
            actor=None,
            action="service.create",
            target=service,
            data={
                "name": name,
                "model": catalog_model.slug,
                "region": region.code,
                "instances": min_instances,
                "min_instances": min_instances,
                "max_instances": max_instances,
                "cluster": placement.cluster.name,
            },
        )
        _enqueue_reconcile(service.pk)
    return service


def service_wake(*, service_id: UUID | str) -> Service | None:
    """Wake an autoscaling service at zero instances for the requests that wait for it; the service when woken.

    It gets ``max(min_instances, 1)`` instances through the autoscaler's own path (``service_autoscale``: a new
    generation, the GPUs reserved, Starting, the reconcile task) with the reason "woken by a request". Idempotent: a
    service that already has instances (woken before, by another worker's request or a person), is stopped, fixed or
    being deleted is left as it is (None). A wake the cluster has no room for leaves the service Idle and says so on
    its timeline; the gateway asks again while requests wait.
    """
    service = Service.objects.filter(pk=service_id).only("instances", "min_instances").first()
    if service is None or service.instances > 0:
        return None
    instances = max(service.min_instances, 1)
    try:
        # A refusal is stored as a parameter of the timeline text: in the platform's language, not in whatever
        # language the calling thread last served.
        with translation.override(settings.LANGUAGE_CODE):
            woken = service_autoscale(
                service_id=service_id, instances=instances, message=TIMELINE("autoscale_wake", n=instances)
            )
    except ApplicationError as exc:
        if exc.code != "no_capacity":
            raise
        with transaction.atomic():
            row = Service.objects.select_for_update(of=("self",)).filter(pk=service_id, instances=0).first()
            if row is not None and status_set(
                service=row,
                status=row.status,
                reason="WakeFailed",
                message=TIMELINE("wake_no_capacity", error=exc.message),
            ):
                row.save()
        return None
    return woken if woken is not None and woken.instances == instances else None


def wake_pending() -> list[str]:
    """Wake every service that held requests asked for (``serving_signals.wake_requests_take``); the ids woken.

    The autoscaler's loop calls this whenever ``wake:notify`` has an element (or each tick). A failure is that
    service's alone: it is logged and the others are still woken; the gateway asks again while its requests wait.
    """
    from deployments.serving_signals import wake_requests_take

    woken = []
    for service_id in wake_requests_take():
        try:
            if service_wake(service_id=service_id) is not None:
                woken.append(service_id)
        except (ValueError, ValidationError):
            log.warning("wake request for %r: not a service id", service_id)
        except Exception:
            log.exception("could not wake service %s", service_id)
    return woken
