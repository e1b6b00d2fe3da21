"""The one scoping mechanism for tenant-owned data.

- ``Model.objects.for_org(org)`` on every tenant-owned model (managers built from ``OrgScopedQuerySet``);
- ``get_for_org_or_404(Model, org, **lookup)`` for single objects: another tenant's object is a 404;
- ``CurrentOrgMiddleware`` puts the session's current organization on ``request.org``;
- ``OrgScopedViewSetMixin`` for DRF; it refuses subclasses that override ``get_queryset``.
"""

from __future__ import annotations

from django.db import models
from django.http import Http404


class OrgScopedQuerySet(models.QuerySet):
    org_field = "org"

    def for_org(self, org):
        if org is None:
            return self.none()
        return self.filter(**{self.org_field: org})


def get_for_org_or_404(model, org, **lookup):
    from django.core.exceptions import ValidationError

    try:
        return model.objects.for_org(org).get(**lookup)
    except (model.DoesNotExist, ValueError, ValidationError):
        # A malformed id (e.g. not a UUID) is simply "not found" for this tenant, never a 500.
        raise Http404(f"No {model._meta.verbose_name} matches the given query.") from None


SESSION_ORG_KEY = "current_org_id"


def memberships_for(user):
    from maas.models import Membership

    return Membership.objects.filter(user=user).select_related("org").order_by("org__personal", "org__name")


class CurrentOrgMiddleware:
    """Attach ``request.org`` and ``request.membership`` for logged-in users (None for visitors)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.org = None
        request.membership = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            membership = None
            wanted = request.session.get(SESSION_ORG_KEY)
            memberships = memberships_for(user)
            if wanted:
                membership = memberships.filter(org_id=wanted).first()
            if membership is None:
                membership = memberships.order_by("-org__personal", "created_at").first()
                if membership is not None:
                    request.session[SESSION_ORG_KEY] = str(membership.org_id)
            if membership is not None:
                request.membership = membership
                request.org = membership.org
        return self.get_response(request)


class OrgScopedViewSetMixin:
    """DRF viewsets over tenant-owned models: the queryset is always ``model.objects.for_org(request org)``.

    Subclasses declare ``scoped_model`` (and may declare ``queryset_hook(qs)`` for select_related and ordering);
    overriding ``get_queryset`` is refused at class creation, so no viewset can forget the tenant filter.
    """

    scoped_model = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__} must not override get_queryset; use queryset_hook for extra filters")

    def queryset_hook(self, queryset):
        return queryset

    def get_queryset(self):
        org = getattr(self.request, "api_org", None) or getattr(self.request, "org", None)
        return self.queryset_hook(self.scoped_model.objects.for_org(org))
