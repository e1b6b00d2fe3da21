"""DRF pieces of tenancy: the one base for viewsets over tenant-owned models."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated

from core.errors import PermissionDenied
from tenancy.models import ApiKey, ApiKeyScope


class ManageScopeForWrites(BasePermission):
    """An ``sk-`` key without the ``manage`` scope may read /api but not write (before any payload is looked at).

    What a key with ``manage`` may write is then its creator's role's business, checked in the services.
    """

    def has_permission(self, request: Any, view: Any) -> bool:
        key = getattr(request, "auth", None)
        if request.method in SAFE_METHODS or not isinstance(key, ApiKey) or ApiKeyScope.MANAGE in key.scopes:
            return True
        # The same error (and JSON shape: detail and code) as the services' own refusal.
        raise PermissionDenied(_("This API key may only call models (/v1); give it the manage scope."))


class OrgScopedViewSetMixin:
    """DRF viewsets over tenant-owned models: the queryset is always ``model.objects.for_org(request org)``.

    Subclasses declare ``scoped_model`` (and may declare ``queryset_hook(qs)`` for select_related and ordering);
    overriding ``get_queryset`` is refused at class creation, so no viewset can forget the tenant filter.
    """

    scoped_model: Any = None
    request: Any
    permission_classes: Any = [IsAuthenticated, ManageScopeForWrites]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__} must not override get_queryset; use queryset_hook for extra filters")

    def queryset_hook(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset

    def get_queryset(self) -> QuerySet[Any]:
        org = getattr(self.request, "api_org", None) or getattr(self.request, "org", None)
        return self.queryset_hook(self.scoped_model.objects.for_org(org))
