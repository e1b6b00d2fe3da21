"""Reads of the deployments app that other apps use (the gateway resolves models and replicas only through these).

Contract for the gateway:
- ``resolve_model_target(model_id, org)``: what a client's ``model`` names, or None (unknown / not this org's);
- ``ready_endpoints(service_ids)``: the Ready replicas of those services, with whatever headers reaching them needs;
- ``callable_models(org)``: the model ids an org can call now (for ``GET /v1/models``).

A public model resolves while one of its public services is offered (``OFFERED_STATUSES``: being created, started,
scaled or running, or Idle: scaled to zero by its autoscaling policy), so that a request made while its replicas warm
up (a restart, a scale from a failure) gets the same 503 ``no_ready_replica`` with ``Retry-After`` as an
organization's own service, not a 404; a model with no such service is not offered and answers 404. The marketplace
reads the same rule (``public_api_status``).

Wake on request: a target names the service a request may wake (``ModelTarget.wake_service_id``: an autoscaling
service that is Idle or on its way up) and how long a request waits for it (``max_wake_wait_s``); the gateway holds
such a request instead of answering 503 (``gateway/waking.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q

from catalog.models import PublicApi
from deployments.drivers import driver_for
from deployments.models import PUBLIC_NAMESPACE, Replica, ScalingMode, Service, ServiceStatus

CALLABLE_STATUSES = (ServiceStatus.RUNNING, ServiceStatus.SCALING)
STARTING_STATUSES = (ServiceStatus.PENDING, ServiceStatus.CREATING, ServiceStatus.STARTING)
# A public service in one of these is offered: callable now, soon (its requests get 503 with Retry-After), or on its
# first request (Idle: the request is held while the service wakes).
OFFERED_STATUSES = (*STARTING_STATUSES, *CALLABLE_STATUSES, ServiceStatus.IDLE)


class ServingState:
    """What ``/v1/models`` and the playground say of a callable model (``status``)."""

    READY = "ready"  # a ready instance answers now
    STARTING = "starting"  # instances are on their way up: requests wait (autoscaling) or get 503 with Retry-After
    IDLE = "idle"  # scaled to zero: the first request wakes it and waits for it


def serving_state(status: str) -> str:
    if status in CALLABLE_STATUSES:
        return ServingState.READY
    if status == ServiceStatus.IDLE:
        return ServingState.IDLE
    return ServingState.STARTING


def _wakeable(service: Service) -> bool:
    """Whether a request that finds no ready replica of ``service`` waits for one (held while the service wakes or
    starts) rather than being answered 503 at once: autoscaling services that should run."""
    return (
        service.scaling_mode == ScalingMode.AUTOSCALE and service.desired_running and service.status in OFFERED_STATUSES
    )


@dataclass(frozen=True)
class Endpoint:
    replica: str  # replica name (pod / process), stable while the replica lives
    base_url: str  # root of the OpenAI-compatible server; requests go to base_url + "/v1/..."
    headers: dict = field(default_factory=dict)  # e.g. Authorization for the API-server proxy
    tls_verify: bool | str = True  # False, True or a CA bundle path
    client_cert: tuple[str, str] | None = None
    service_id: str = ""  # the service the replica belongs to (its serving signals count the requests sent there)


@dataclass(frozen=True)
class ModelTarget:
    model_id: str  # as the client names it
    public: bool  # public/<slug>: shared platform deployment, billed per token
    service_ids: tuple[str, ...]  # services whose replicas may serve it
    upstream_model: str  # the name the runtime serves (its --served-model-name)
    catalog_model_id: int
    catalog_slug: str
    context_length: int
    owner_org_id: str  # the org owning the services (the platform org for public models)
    kind: str  # catalog.models.ModelKind: which endpoints it answers (chat or embeddings)
    # An autoscaling service a request may wake when no replica is ready (None: such a request gets 503 at once),
    # and the longest such a request waits for a ready replica.
    wake_service_id: str | None = None
    max_wake_wait_s: int = 0


def _public_services(slug: str):
    return Service.objects.filter(
        org__namespace=PUBLIC_NAMESPACE,
        catalog_model__slug=slug,
        catalog_model__listed=True,
        status__in=OFFERED_STATUSES,
    ).select_related("catalog_model", "org")


def resolve_model_target(model_id: str, org) -> ModelTarget | None:
    if not isinstance(model_id, str) or "/" not in model_id:
        return None
    namespace, _, name = model_id.partition("/")
    if namespace == PUBLIC_NAMESPACE:
        services = list(_public_services(name))
        if not services:
            return None
        first = services[0]
        wakeable = next((s for s in services if _wakeable(s)), None)
        return ModelTarget(
            model_id=model_id,
            public=True,
            service_ids=tuple(str(s.pk) for s in services),
            upstream_model=first.model_id,
            catalog_model_id=first.catalog_model_id,
            catalog_slug=first.catalog_model.slug,
            context_length=first.max_model_len,
            owner_org_id=str(first.org_id),
            kind=first.catalog_model.kind,
            wake_service_id=str(wakeable.pk) if wakeable is not None else None,
            max_wake_wait_s=wakeable.max_wake_wait_s if wakeable is not None else 0,
        )
    if org is None or namespace != org.namespace:
        return None
    service = (
        Service.objects.for_org(org)
        .filter(name=name)
        .exclude(status=ServiceStatus.DELETED)
        .select_related("catalog_model")
        .first()
    )
    if service is None:
        return None
    return ModelTarget(
        model_id=model_id,
        public=False,
        service_ids=(str(service.pk),),
        upstream_model=service.model_id,
        catalog_model_id=service.catalog_model_id,
        catalog_slug=service.catalog_model.slug,
        context_length=service.max_model_len,
        owner_org_id=str(service.org_id),
        kind=service.catalog_model.kind,
        wake_service_id=str(service.pk) if _wakeable(service) else None,
        max_wake_wait_s=service.max_wake_wait_s if _wakeable(service) else 0,
    )


def callable_models(org) -> list[dict]:
    """Public models with an offered public deployment, then the org's running (or Idle, autoscaling) services; each
    with its ``status`` (``ServingState``): ready, starting, or idle (the first request wakes it)."""
    items: dict[str, dict] = {}
    public = Service.objects.filter(
        org__namespace=PUBLIC_NAMESPACE, catalog_model__listed=True, status__in=OFFERED_STATUSES
    )
    rank = {ServingState.READY: 0, ServingState.STARTING: 1, ServingState.IDLE: 2}
    for service in public.select_related("catalog_model").order_by("catalog_model__slug", "created_at"):
        model_id = f"public/{service.catalog_model.slug}"
        state = serving_state(service.status)
        item = items.setdefault(
            model_id,
            {
                "id": model_id,
                "owned_by": PUBLIC_NAMESPACE,
                "created": int(service.created_at.timestamp()),
                "catalog_slug": service.catalog_model.slug,
                "context_length": service.max_model_len,
                "public": True,
                "kind": service.catalog_model.kind,
                "status": state,
            },
        )
        if rank[state] < rank[item["status"]]:  # one service ready is enough for the model to be ready
            item["status"] = state
    if org is not None:
        own = Service.objects.for_org(org).filter(
            Q(status__in=CALLABLE_STATUSES)
            | Q(status__in=OFFERED_STATUSES, scaling_mode=ScalingMode.AUTOSCALE, desired_running=True)
        )
        for service in own.select_related("catalog_model", "org"):
            items[service.model_id] = {
                "id": service.model_id,
                "owned_by": org.namespace,
                "created": int(service.created_at.timestamp()),
                "catalog_slug": service.catalog_model.slug,
                "context_length": service.max_model_len,
                "public": False,
                "kind": service.catalog_model.kind,
                "status": serving_state(service.status),
            }
    return list(items.values())


def public_api_status(*, slugs, **_kwargs) -> dict[str, PublicApi]:
    """Receiver of ``catalog.signals.public_api_requested``: for each of ``slugs`` with an offered public service,
    AVAILABLE when one has a ready replica the gateway routes to, else STARTING, or IDLE when every one is scaled to
    zero and wakes on a request (one query)."""
    ready = Replica.objects.filter(service=OuterRef("pk"), ready=True)
    rows = (
        Service.objects.filter(
            org__namespace=PUBLIC_NAMESPACE, catalog_model__slug__in=list(slugs), status__in=OFFERED_STATUSES
        )
        .annotate(has_ready=Exists(ready))
        .values_list("catalog_model__slug", "status", "has_ready")
    )
    found: dict[str, PublicApi] = {}
    rank = {PublicApi.AVAILABLE: 0, PublicApi.STARTING: 1, PublicApi.IDLE: 2}
    for slug, status, has_ready in rows:
        if has_ready and status in CALLABLE_STATUSES:
            state = PublicApi.AVAILABLE
        elif status == ServiceStatus.IDLE:
            state = PublicApi.IDLE
        else:
            state = PublicApi.STARTING
        if slug not in found or rank[state] < rank[found[slug]]:
            found[slug] = state
    return found


def ready_endpoints(service_ids) -> list[Endpoint]:
    replicas = (
        Replica.objects.filter(
            service_id__in=list(service_ids),
            ready=True,
            draining_since__isnull=True,
            service__status__in=CALLABLE_STATUSES,
        )
        .select_related("service__cluster")
        .order_by("service_id", "name")
    )
    endpoints = []
    for replica in replicas:
        cluster = replica.service.cluster
        headers: dict[str, str] = {}
        verify: bool | str = True
        cert: tuple[str, str] | None = None
        if cluster is not None:
            headers, verify, cert = driver_for(cluster).replica_access(cluster)
        endpoints.append(
            Endpoint(
                replica=replica.name,
                base_url=replica.base_url,
                headers=headers,
                tls_verify=verify,
                client_cert=cert,
                service_id=str(replica.service_id),
            )
        )
    return endpoints


# --- console and API reads ----------------------------------------------------------------------------------------


def org_services(org):
    """The org's services that are not deleted, newest first, with what list pages show."""
    return Service.objects.for_org(org).live().select_related("catalog_model", "region", "org", "cluster")


def service_events(service, *, limit: int = 100):
    return list(service.events.select_related("actor").order_by("-created_at", "-id")[:limit])


def service_replicas(service):
    return list(service.replica_set.order_by("name"))


def clusters_overview():
    from django.db.models import Count, Q

    from deployments.models import Cluster

    return Cluster.objects.select_related("region").annotate(
        live_services=Count("services", filter=~Q(services__status=ServiceStatus.DELETED))
    )


def cluster_services(cluster):
    return (
        Service.objects.filter(cluster=cluster)
        .live()
        .select_related("org", "catalog_model")
        .order_by("org__namespace", "name")
    )


def regions_with_clusters():
    from deployments.models import Region

    return Region.objects.prefetch_related("clusters")
