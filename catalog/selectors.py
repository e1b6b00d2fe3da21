"""Reads for the marketplace: search, filters, sorting."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from django.db.models import Prefetch, Q, QuerySet

from catalog.models import CatalogModel, DeploymentVariant, PublicApi, Task
from catalog.signals import public_api_requested

SIZE_BUCKETS = {
    # key: (label, min billions inclusive, max billions exclusive)
    "small": ("< 10B", Decimal("0"), Decimal("10")),
    "medium": ("10B – 40B", Decimal("10"), Decimal("40")),
    "large": ("40B – 100B", Decimal("40"), Decimal("100")),
    "xlarge": ("≥ 100B", Decimal("100"), None),
}
SORTS = {
    "updated": ("-spec_updated", "slug"),
    "name": ("display_name",),
    "price": ("input_price_per_1k", "output_price_per_1k", "slug"),
    "context": ("-context_length", "slug"),
    "size": ("-parameters_b", "slug"),
}


@dataclass(frozen=True)
class MarketplaceQuery:
    q: str = ""
    task: str = ""
    publisher: str = ""
    size: str = ""
    sort: str = "updated"

    @classmethod
    def from_params(cls, params) -> MarketplaceQuery:
        task = params.get("task", "")
        size = params.get("size", "")
        sort = params.get("sort", "updated")
        return cls(
            q=(params.get("q") or "").strip()[:100],
            task=task if task in Task.values else "",
            publisher=(params.get("publisher") or "").strip()[:100],
            size=size if size in SIZE_BUCKETS else "",
            sort=sort if sort in SORTS else "updated",
        )

    @property
    def is_filtered(self) -> bool:
        return bool(self.q or self.task or self.publisher or self.size)


def listed_models() -> QuerySet[CatalogModel]:
    return CatalogModel.objects.filter(listed=True)


def marketplace_models(query: MarketplaceQuery) -> QuerySet[CatalogModel]:
    qs = listed_models()
    if query.q:
        qs = qs.filter(
            Q(name__icontains=query.q)
            | Q(display_name__icontains=query.q)
            | Q(publisher__icontains=query.q)
            | Q(description_en__icontains=query.q)
            | Q(description_zh__icontains=query.q)
            | Q(source_repo__icontains=query.q)
        )
    if query.task:
        qs = qs.filter(tasks__contains=[query.task])
    if query.publisher:
        qs = qs.filter(publisher__iexact=query.publisher)
    if query.size:
        _label, low, high = SIZE_BUCKETS[query.size]
        qs = qs.filter(parameters_b__gte=low)
        if high is not None:
            qs = qs.filter(parameters_b__lt=high)
    return qs.order_by(*SORTS[query.sort])


def publishers() -> list[str]:
    return list(listed_models().order_by("publisher").values_list("publisher", flat=True).distinct())


def model_detail(slug: str) -> CatalogModel:
    """A listed model with its variants; raises CatalogModel.DoesNotExist."""
    return (
        listed_models()
        .prefetch_related(Prefetch("variants", queryset=DeploymentVariant.objects.order_by("position")))
        .get(slug=slug)
    )


def public_model_by_id(model_id: str) -> CatalogModel | None:
    """Resolve a ``public/<slug>`` API id to its listed catalog model."""
    if not model_id.startswith("public/"):
        return None
    return listed_models().filter(slug=model_id.removeprefix("public/")).first()


def public_api(slugs) -> dict[str, PublicApi]:
    """Whether each model's ``public/<slug>`` API can be called now: one query by the deployments app, whatever the
    number of models (``catalog.signals``)."""
    slugs = list(slugs)
    found: dict[str, PublicApi] = dict.fromkeys(slugs, PublicApi.NOT_OFFERED)
    if not slugs:
        return found
    for _receiver, answer in public_api_requested.send(sender=CatalogModel, slugs=slugs):
        for slug, state in (cast("dict[str, str] | None", answer) or {}).items():
            if slug in found:
                found[slug] = PublicApi(state)
    return found
