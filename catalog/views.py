"""Marketplace pages: the model list (search, filters, sort and paging in place with htmx) and model details."""

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

from catalog import selectors
from catalog.models import CatalogModel, PublicApi, Task

PAGE_SIZE = 12


def _url_or_none(name, *args):
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def marketplace(request):
    query = selectors.MarketplaceQuery.from_params(request.GET)
    paginator = Paginator(selectors.marketplace_models(query), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    states = selectors.public_api(m.slug for m in page.object_list)
    for m in page.object_list:
        setattr(m, "public_api", states[m.slug])  # noqa: B010  (what the card shows; not a model field)
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "query": query,
        "page": page,
        "base_query": params.urlencode(),
        "tasks": Task.choices,
        "publishers": selectors.publishers(),
        "sizes": [(key, label) for key, (label, _lo, _hi) in selectors.SIZE_BUCKETS.items()],
        "sorts": SORT_LABELS,
    }
    # Filters swap only the results; the full page is rendered on a normal load or a history restore.
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "catalog/partials/results.html", context)
    return render(request, "catalog/marketplace.html", context)


def model_detail(request, slug):
    try:
        model = selectors.model_detail(slug)
    except CatalogModel.DoesNotExist:
        raise Http404 from None
    context = {
        "model": model,
        "public_api": selectors.public_api([model.slug])[model.slug],
        # Callable now, or on the first request (which wakes it): both show the snippet and the playground link.
        "callable_states": (PublicApi.AVAILABLE, PublicApi.IDLE),
        "variants": list(model.variants.all()),
        "playground_url": _url_or_none("playground:index"),
        "deploy_url": _url_or_none("deployments:service-new", model.slug),
    }
    return render(request, "catalog/model_detail.html", context)


SORT_LABELS = [
    ("updated", _("Recently updated")),
    ("name", _("Name")),
    ("price", _("Lowest price")),
    ("context", _("Longest context")),
    ("size", _("Largest")),
]
