"""The one scoping mechanism for tenant-owned data.

- ``Model.objects.for_org(org)`` on every tenant-owned model (managers built from ``OrgScopedQuerySet``);
- ``get_for_org_or_404(Model, org, **lookup)`` for single objects: another tenant's object is a 404.

The request side (``request.org`` from the session's current organization, the DRF mixin that refuses an
overridden ``get_queryset``) lives in ``tenancy.middleware`` and ``tenancy.api``.
"""

from __future__ import annotations

from typing import Any, Self, TypeVar

from django.core.exceptions import ValidationError
from django.db import models
from django.http import Http404

M = TypeVar("M", bound=models.Model)


class OrgScopedQuerySet(models.QuerySet[M]):
    org_field = "org"

    def for_org(self, org: Any) -> Self:
        if org is None:
            return self.none()
        return self.filter(**{self.org_field: org})


def get_for_org_or_404(model: type[M], org: Any, **lookup: Any) -> M:
    try:
        return model.objects.for_org(org).get(**lookup)  # type: ignore[attr-defined, no-any-return]
    except (model.DoesNotExist, ValueError, ValidationError):  # type: ignore[attr-defined]
        # A malformed id (e.g. not a UUID) is simply "not found" for this tenant, never a 500.
        raise Http404(f"No {model._meta.verbose_name} matches the given query.") from None
