"""DRF pieces of tenancy: the one base for viewsets over tenant-owned models."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet


class OrgScopedViewSetMixin:
    """DRF viewsets over tenant-owned models: the queryset is always ``model.objects.for_org(request org)``.

    Subclasses declare ``scoped_model`` (and may declare ``queryset_hook(qs)`` for select_related and ordering);
    overriding ``get_queryset`` is refused at class creation, so no viewset can forget the tenant filter.
    """

    scoped_model: Any = None
    request: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__} must not override get_queryset; use queryset_hook for extra filters")

    def queryset_hook(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset

    def get_queryset(self) -> QuerySet[Any]:
        org = getattr(self.request, "api_org", None) or getattr(self.request, "org", None)
        return self.queryset_hook(self.scoped_model.objects.for_org(org))
