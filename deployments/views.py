"""Console pages: model services (deploy, scale, stop/start, delete) and, for platform admins, GPU clusters."""

from __future__ import annotations

from decimal import Decimal
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from catalog import selectors as catalog_selectors
from catalog.models import CatalogModel
from core.errors import ApplicationError
from core.forms import apply_error
from core.querysets import get_for_org_or_404
from deployments import selectors, services
from deployments.drivers import driver_for
from deployments.drivers.kube.rbac import CLUSTER_ROLE_NAME, cluster_role_yaml
from deployments.forms import (
    ClusterForm,
    ClusterNamespaceForm,
    ClusterPriorityForm,
    GpuQuotaForm,
    KubeconfigReplaceForm,
    ScaleForm,
    ScalingPolicyForm,
    ServiceCreateForm,
)
from deployments.models import PUBLIC_NAMESPACE, BillingMode, Cluster, ManualScale, Region, ScalingMode, Service
from deployments.placement import fitting_regions
from deployments.policy import (
    ScalingPolicy,
    manual_scale_outcome,
    price_range,
    quota_overview,
)
from deployments.signals import charge_quote_requested
from tenancy.models import Organization


def staff_required(view):
    """Platform admins only; everyone else gets a 404 (the page does not exist for them)."""

    @wraps(view)
    @login_required
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            raise Http404
        return view(request, *args, **kwargs)

    return wrapped


# --- services -----------------------------------------------------------------------------------------------


@login_required
def service_list(request):
    return render(request, "deployments/services.html", {"services": list(selectors.org_services(request.org))})


def _catalog_model(slug: str) -> CatalogModel:
    try:
        return catalog_selectors.model_detail(slug)
    except CatalogModel.DoesNotExist:
        raise Http404 from None


def charge_quote(*, org, region, gpu_product: str, gpu_count: int, instances: int, billing_mode: str, service=None):
    """Billing's price for this deploy or scale (``deployments.signals``): what it will charge; None without billing."""
    answers = charge_quote_requested.send(
        sender=Service,
        org=org,
        region=region,
        gpu_product=gpu_product,
        gpu_count=gpu_count,
        instances=instances,
        billing_mode=billing_mode,
        service=service,
    )
    return next((answer for _receiver, answer in answers if answer is not None), None)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _draft_policy(source) -> ScalingPolicy | None:
    """The autoscaling bounds typed so far on the deploy form, for its price; None when fixed or not yet numbers."""
    if source.get("scaling_mode") != ScalingMode.AUTOSCALE:
        return None
    low, high = _int(source.get("min_instances")), _int(source.get("max_instances"))
    if low is None or high is None or not 0 <= low <= high <= services.MAX_INSTANCES or high < 1:
        return None
    return ScalingPolicy(scaling_mode=ScalingMode.AUTOSCALE, min_instances=low, max_instances=high)


def _quote(org, placements: dict, region_code, instances, billing_mode, source=None) -> dict:
    """The live price shown next to the deploy form, with the range an autoscaling policy spans."""
    placement = placements.get(region_code)
    instances = _int(instances) or 0
    policy = _draft_policy(source or {})
    if policy is not None:  # it starts within its bounds (service_create), at least one instance
        instances = min(max(instances, policy.min_instances, 1), policy.max_instances)
    if placement is None or not 1 <= instances <= services.MAX_INSTANCES:
        return {"quote": None}
    if billing_mode not in BillingMode.values:
        billing_mode = BillingMode.PAYG
    quote = charge_quote(
        org=org,
        region=placement.cluster.region,
        gpu_product=placement.gpu_product,
        gpu_count=placement.gpu_count,
        instances=instances,
        billing_mode=billing_mode,
    )
    return {
        "quote": quote,
        "placement": placement,
        "range": price_range(quote, policy or ScalingPolicy(), instances=instances),
        "new_service": True,
    }


@login_required
def service_new(request, slug):
    model = _catalog_model(slug)
    regions = fitting_regions(model)
    fitting = [region for region, placement, _reason in regions if placement]
    placements = {region.code: placement for region, placement, _reason in regions if placement}
    form = ServiceCreateForm(
        request.POST or None,
        regions=fitting,
        initial={"name": model.slug.replace(".", "-")[:40], "region": fitting[0].code if fitting else None},
    )
    source = request.POST if request.method == "POST" else {}
    quoted = _quote(
        request.org,
        placements,
        source.get("region") or (fitting[0].code if fitting else None),
        source.get("instances", 1),
        source.get("billing_mode", BillingMode.PAYG),
        source,
    )
    # A pay-as-you-go deploy the balance pays for less than BILLING_DEPLOY_WARN_HOURS is confirmed on the form.
    quote = quoted["quote"]
    confirm_low_balance = (
        request.method == "POST"
        and form.is_valid()
        and quote is not None
        and quote.warn
        and not quote.subscription
        and request.POST.get("confirmed") != "1"
    )
    if request.method == "POST" and form.is_valid() and not confirm_low_balance:
        data = form.cleaned_data
        try:
            service = services.service_create(
                org=request.org,
                actor=request.user,
                catalog_model=model,
                region=data["region"],
                name=data["name"],
                instances=data["instances"],
                billing_mode=data["billing_mode"],
                policy=form.policy() if data["scaling_mode"] == ScalingMode.AUTOSCALE else None,
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, _("Service %(id)s is being deployed.") % {"id": service.model_id})
            return redirect("deployments:service-detail", pk=service.pk)
    context = {
        "model": model,
        "form": form,
        "unfit": [(region, reason) for region, placement, reason in regions if not placement],
        "confirm_low_balance": confirm_low_balance,
        **quoted,
    }
    return render(request, "deployments/service_new.html", context)


@login_required
def service_price(request, slug):
    """htmx: the price fragment for the deploy form's current region, instance count and billing mode."""
    model = _catalog_model(slug)
    region = Region.objects.prefetch_related("clusters").filter(code=request.GET.get("region", "")).first()
    placements = {}
    if region is not None:
        for candidate, placement, _reason in fitting_regions(model):
            if candidate.pk == region.pk and placement:
                placements[region.code] = placement
    context = _quote(
        request.org,
        placements,
        region.code if region else None,
        request.GET.get("instances"),
        request.GET.get("billing_mode", BillingMode.PAYG),
        request.GET,
    )
    return render(request, "deployments/partials/price.html", context)


def _service(request, pk) -> Service:
    return get_for_org_or_404(Service, request.org, pk=pk)


def _costs(service: Service, policy: ScalingPolicy | None = None, instances: int | None = None) -> dict:
    """The price range of ``policy`` (default: the service's) and the month the last 7 days point to."""
    policy = policy or ScalingPolicy.of(service)
    instances = service.instances if instances is None else instances
    quote = _scale_quote(service, max(instances, 1))
    if quote is None:
        return {"range": None, "estimate": None}
    return {
        "range": price_range(quote, policy, instances=instances),
        "estimate": _estimate(quote),
        "platform_cost": service.org.namespace == PUBLIC_NAMESPACE,
    }


def _estimate(quote) -> dict | None:
    """The month the service's recent days point to, as billing prices it (None: under an hour of history)."""
    if quote.recent is None or quote.recent_monthly is None:
        return None
    return {
        "currency": quote.currency,
        "days": quote.recent.days.quantize(Decimal("0.1")),
        "instance_hours": quote.recent.instance_hours.quantize(Decimal("0.1")),
        "monthly": quote.recent_monthly,
    }


def _policy_form(service: Service, data=None) -> ScalingPolicyForm:
    return ScalingPolicyForm(data, initial=ScalingPolicyForm.initial_for(ScalingPolicy.of(service)))


def _scaling_context(service: Service, policy_form: ScalingPolicyForm | None = None, *, action: str = "") -> dict:
    return {
        "service": service,
        "policy_form": policy_form or _policy_form(service),
        "policy_action": action or reverse("deployments:service-scaling", args=[service.pk]),
        **_costs(service),
    }


def _detail_page(
    request, service: Service, *, scale_form: ScaleForm | None = None, policy_form: ScalingPolicyForm | None = None
):
    context = {
        "service": service,
        "events": selectors.service_events(service, limit=50),
        "replicas": selectors.service_replicas(service),
    }
    # The status and events panels poll themselves (without the prices and the estimate, which they do not show).
    if request.htmx and request.htmx.target == "service-status":
        return render(request, "deployments/partials/service_status.html", context)
    if request.htmx and request.htmx.target == "service-events":
        return render(request, "deployments/partials/service_events.html", context)
    context["scale_form"] = scale_form or ScaleForm(initial={"instances": service.instances})
    context.update(_scaling_context(service, policy_form))
    return render(request, "deployments/service_detail.html", context)


@login_required
def service_detail(request, pk):
    return _detail_page(request, _service(request, pk))


def _scale_quote(service: Service, instances: int):
    return charge_quote(
        org=service.org,
        region=service.region,
        gpu_product=service.gpu_product,
        gpu_count=service.gpu_count,
        instances=instances,
        billing_mode=service.billing_mode,
        service=service,
    )


def _scale_choices(service: Service, instances: int) -> list[dict]:
    """An autoscaling service's two ways to take a manual count, each with the policy and price it leads to."""
    choices = []
    for effect in (ManualScale.FIXED, ManualScale.BOUNDS):
        outcome = manual_scale_outcome(service, instances, effect)
        costs = _costs(service, outcome, instances)
        choices.append({"effect": effect, "label": ManualScale(effect).label, "policy": outcome, **costs})
    return choices


@login_required
def service_scale(request, pk):
    """GET (htmx): the new count's price and its difference; POST: a confirmation page with the price, then
    (``confirmed``) scale. A refused count comes back in the service page's form, or in the htmx fragment.

    An autoscaling service's confirmation page offers two buttons, each saying what follows: switch to fixed at the
    count (the autoscaler stops), or keep autoscaling with the bounds moved to the count."""
    service = _service(request, pk)
    if request.method != "POST":
        form = ScaleForm(request.GET)
        if not request.htmx:
            form.is_valid()
            return _detail_page(request, service, scale_form=form)
        quote = _scale_quote(service, form.cleaned_data["instances"]) if form.is_valid() else None
        return render(
            request, "deployments/partials/scale_confirm.html", {"service": service, "form": form, "quote": quote}
        )
    form = ScaleForm(request.POST)
    if not form.is_valid():
        return _detail_page(request, service, scale_form=form)
    instances = form.cleaned_data["instances"]
    autoscaling = service.scaling_mode == ScalingMode.AUTOSCALE
    if instances == service.instances and not autoscaling:
        messages.info(request, _("%(id)s already has %(n)d instances.") % {"id": service.model_id, "n": instances})
        return redirect("deployments:service-detail", pk=service.pk)
    effect = form.cleaned_data["on_autoscale"]
    if not form.cleaned_data["confirmed"] or (autoscaling and not effect):
        context = {
            "service": service,
            "form": form,
            "quote": _scale_quote(service, instances),
            "choices": _scale_choices(service, instances) if autoscaling else None,
            **({} if autoscaling else _costs(service, instances=instances)),
        }
        return render(request, "deployments/service_scale_confirm.html", context)
    try:
        services.service_scale(
            service=service, actor=request.user, instances=instances, on_autoscale=effect or ManualScale.FIXED
        )
    except ApplicationError as exc:
        apply_error(form, exc)
        return _detail_page(request, service, scale_form=form)
    messages.success(request, _("Scaling %(id)s to %(n)d instances.") % {"id": service.model_id, "n": instances})
    return redirect("deployments:service-detail", pk=service.pk)


def _set_policy(request, service: Service) -> tuple[Service, ScalingPolicyForm, bool]:
    """Set the policy posted in ``request``; the refreshed form after a save, else the form with its errors."""
    form = _policy_form(service, request.POST)
    if form.is_valid():
        try:
            service = services.service_set_policy(service=service, actor=request.user, policy=form.policy())
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            return service, _policy_form(service), True
    return service, form, False


@login_required
def service_scaling(request, pk):
    """The Scaling panel: GET shows it (htmx: the panel alone); POST sets the policy. htmx swaps the panel back,
    saved or with its errors (status 200, so htmx swaps it); without htmx a save redirects to the service page."""
    service = _service(request, pk)
    form, saved = _policy_form(service), False
    if request.method == "POST":
        service, form, saved = _set_policy(request, service)
        if saved and not request.htmx:
            messages.success(request, _("Scaling policy of %(id)s saved.") % {"id": service.model_id})
            return redirect("deployments:service-detail", pk=service.pk)
    if request.htmx:
        context = {**_scaling_context(service, form), "saved": saved}
        return render(request, "deployments/partials/service_scaling.html", context)
    return _detail_page(request, service, policy_form=form)


def _action(service_fn, done_message):
    @login_required
    @require_POST
    def view(request, pk):
        service = _service(request, pk)
        try:
            service_fn(service=service, actor=request.user)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, str(done_message) % {"id": service.model_id})
        return redirect("deployments:service-detail", pk=service.pk)

    return view


service_stop = _action(services.service_stop, gettext_lazy("Stopping %(id)s."))
service_start = _action(services.service_start, gettext_lazy("Starting %(id)s."))


@login_required
@require_POST
def service_delete(request, pk):
    service = _service(request, pk)
    services.service_delete(service=service, actor=request.user)
    messages.success(request, _("Deleting %(id)s.") % {"id": service.model_id})
    return redirect("deployments:services")


# --- platform staff: the platform's public services, and GPU quotas ------------------------------------------


def _public_service(pk) -> Service:
    service = (
        Service.objects.filter(pk=pk, org__namespace=PUBLIC_NAMESPACE)
        .live()
        .select_related("org", "region", "catalog_model")
        .first()
    )
    if service is None:
        raise Http404("No such public service")
    return service


@staff_required
def platform_services(request):
    """The public models' services (the platform organization has no members: staff set their policies)."""
    rows = (
        Service.objects.filter(org__namespace=PUBLIC_NAMESPACE)
        .live()
        .select_related("catalog_model", "region")
        .order_by("catalog_model__slug", "name")
    )
    return render(request, "deployments/platform_services.html", {"services": list(rows)})


@staff_required
def platform_service(request, pk):
    """A public service's scaling policy, set by platform staff; its cost is the platform's."""
    service = _public_service(pk)
    action = reverse("deployments:platform-service", args=[service.pk])
    form, saved = _policy_form(service), False
    if request.method == "POST":
        service, form, saved = _set_policy(request, service)
        if saved and not request.htmx:
            messages.success(request, _("Scaling policy of %(id)s saved.") % {"id": service.model_id})
            return redirect(action)
    context = {**_scaling_context(service, form, action=action), "saved": saved}
    if request.htmx:
        return render(request, "deployments/partials/service_scaling.html", context)
    return render(request, "deployments/platform_service.html", context)


@staff_required
def gpu_quotas(request):
    """Every organization × region: its GPU quota (set, or the default) and the GPUs its services hold."""
    query = request.GET.get("q", "").strip()[:100]
    orgs = Organization.objects.order_by("namespace")
    if query:
        orgs = orgs.filter(Q(name__icontains=query) | Q(namespace__icontains=query))
    page = Paginator(orgs, 20).get_page(request.GET.get("page"))
    regions = list(Region.objects.order_by("position", "code"))
    rows = quota_overview(list(page.object_list), regions)
    context = {"page": page, "query": query, "rows": rows, "default_quota": settings.DEPLOY_DEFAULT_GPU_QUOTA}
    return render(request, "deployments/gpu_quotas.html", context)


@staff_required
@require_POST
def gpu_quota(request, org_id, region_code):
    org = Organization.objects.filter(pk=org_id).first()
    region = Region.objects.filter(code=region_code).first()
    if org is None or region is None:
        raise Http404("No such organization or region")
    form = GpuQuotaForm(request.POST)
    back = f"{reverse('deployments:gpu-quotas')}?q={org.namespace}"
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for e in form.errors.get("max_gpus", [])))
        return redirect(back)
    max_gpus = form.cleaned_data["max_gpus"]
    try:
        services.gpu_quota_set(actor=request.user, org=org, region=region, max_gpus=max_gpus)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if max_gpus is None:
            messages.success(
                request,
                _("%(org)s in %(region)s is back to the default quota.")
                % {"org": org.namespace, "region": region.code},
            )
        else:
            messages.success(
                request,
                _("%(org)s may hold %(n)d GPUs in %(region)s.")
                % {"org": org.namespace, "n": max_gpus, "region": region.code},
            )
    return redirect(back)


# --- clusters (platform admins) -----------------------------------------------------------------------------


def _kubeconfig_form_data(request):
    return (request.POST, request.FILES) if request.method == "POST" else (None,)


@staff_required
def cluster_list(request):
    return render(request, "deployments/clusters.html", {"clusters": list(selectors.clusters_overview())})


@staff_required
def cluster_new(request):
    form = ClusterForm(*_kubeconfig_form_data(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            cluster = services.cluster_register(
                actor=request.user,
                name=data["name"],
                region=data["region"],
                kubeconfig=data["kubeconfig"],
                context=data["context"] or None,
                access_mode=data["access_mode"],
                ingress_base_url=data["ingress_base_url"],
                priority_value=data["priority_value"],
                priority_preemption=data["priority_preemption"],
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, _("Cluster %(name)s registered.") % {"name": cluster.name})
            return redirect("deployments:cluster-detail", pk=cluster.pk)
    return render(request, "deployments/cluster_new.html", {"form": form, **_cluster_role_context()})


def _cluster_role_context() -> dict:
    return {"cluster_role_yaml": cluster_role_yaml(), "cluster_role_name": CLUSTER_ROLE_NAME}


def _cluster(pk) -> Cluster:
    try:
        return Cluster.objects.select_related("region").get(pk=pk)
    except (Cluster.DoesNotExist, ValueError):
        raise Http404 from None


@staff_required
def cluster_detail(request, pk):
    cluster = _cluster(pk)
    form = KubeconfigReplaceForm(*_kubeconfig_form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.cluster_replace_kubeconfig(
                cluster=cluster,
                actor=request.user,
                kubeconfig=form.cleaned_data["kubeconfig"],
                context=form.cleaned_data["context"] or None,
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, _("Kubeconfig replaced."))
            return redirect("deployments:cluster-detail", pk=cluster.pk)
    context = {
        "cluster": cluster,
        "driver": driver_for(cluster),
        "services": list(selectors.cluster_services(cluster)),
        "form": form,
        "priority_form": ClusterPriorityForm(
            initial={"priority_value": cluster.priority_value, "priority_preemption": cluster.priority_preemption}
        ),
        "namespace_form": _namespace_form(cluster),
        "inventory": sorted((cluster.inventory or {}).items()),
        **(_cluster_role_context() if driver_for(cluster).has_kubeconfig else {}),
        "rbac_missing": any(c.get("key") == "rbac" and not c.get("ok") for c in cluster.checks or []),
    }
    return render(request, "deployments/cluster_detail.html", context)


@staff_required
@require_POST
def cluster_priority(request, pk):
    cluster = _cluster(pk)
    form = ClusterPriorityForm(request.POST)
    if form.is_valid():
        try:
            services.cluster_set_priority(
                cluster=cluster,
                actor=request.user,
                priority_value=form.cleaned_data["priority_value"],
                priority_preemption=form.cleaned_data["priority_preemption"],
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, _("Priority class updated."))
            return redirect("deployments:cluster-detail", pk=cluster.pk)
    context = {
        "cluster": cluster,
        "driver": driver_for(cluster),
        "services": list(selectors.cluster_services(cluster)),
        "form": KubeconfigReplaceForm(),
        "priority_form": form,
        "namespace_form": _namespace_form(cluster),
        "inventory": sorted((cluster.inventory or {}).items()),
        **_cluster_role_context(),
    }
    return render(request, "deployments/cluster_detail.html", context, status=400)


def _namespace_form(cluster: Cluster, data=None) -> ClusterNamespaceForm:
    initial = {
        key: getattr(cluster, key)
        for key in (
            "org_gpu_quota",
            "network_sources",
            "ingress_namespace",
            "model_cache",
            "model_cache_path",
            "image_mirror",
        )
    }
    return ClusterNamespaceForm(data, initial=initial)


@staff_required
@require_POST
def cluster_namespace(request, pk):
    cluster = _cluster(pk)
    form = _namespace_form(cluster, request.POST)
    if form.is_valid():
        data = form.cleaned_data
        clear = data["clear_tokens"]
        try:
            services.cluster_set_namespace_settings(
                cluster=cluster,
                actor=request.user,
                org_gpu_quota=data["org_gpu_quota"],
                network_sources=data["network_sources"],
                ingress_namespace=data["ingress_namespace"],
                model_cache=data["model_cache"],
                model_cache_path=data["model_cache_path"],
                image_mirror=data["image_mirror"],
                hf_token="" if clear else (data["hf_token"] or None),
                modelscope_token="" if clear else (data["modelscope_token"] or None),
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, _("Namespace settings saved; services on this cluster are applied again."))
            return redirect("deployments:cluster-detail", pk=cluster.pk)
    context = {
        "cluster": cluster,
        "driver": driver_for(cluster),
        "services": list(selectors.cluster_services(cluster)),
        "form": KubeconfigReplaceForm(),
        "priority_form": ClusterPriorityForm(
            initial={"priority_value": cluster.priority_value, "priority_preemption": cluster.priority_preemption}
        ),
        "namespace_form": form,
        "inventory": sorted((cluster.inventory or {}).items()),
        **_cluster_role_context(),
    }
    return render(request, "deployments/cluster_detail.html", context, status=400)


@staff_required
@require_POST
def cluster_action(request, pk, action):
    cluster = _cluster(pk)
    if action == "cordon":
        services.cluster_set_cordoned(cluster=cluster, actor=request.user, cordoned=True)
        messages.success(request, _("Cluster cordoned: no new placements."))
    elif action == "uncordon":
        services.cluster_set_cordoned(cluster=cluster, actor=request.user, cordoned=False)
        messages.success(request, _("Cluster uncordoned."))
    elif action == "drain":
        stopped = services.cluster_drain(cluster=cluster, actor=request.user)
        messages.success(request, _("Cluster cordoned and drained: %(n)d service(s) stopped.") % {"n": stopped})
    elif action == "check":
        cluster = services.cluster_check(cluster_id=cluster.pk)
        messages.success(request, _("Checked: %(health)s.") % {"health": cluster.get_health_display()})
    else:
        raise Http404
    return redirect("deployments:cluster-detail", pk=cluster.pk)
