"""Reads for the tenancy core."""

from __future__ import annotations

import functools
import zoneinfo
from typing import TYPE_CHECKING

from django.contrib.sessions.backends.base import SessionBase
from django.db.models import F, QuerySet
from django.utils import timezone

from tenancy.models import ApiKey, AuditEvent, Invitation, Membership, UserProfile, hash_api_key

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from tenancy.models import Organization

SESSION_ORG_KEY = "current_org_id"
# The user's time zone, read at log-in (and set when they change it): no query per request.
SESSION_TIME_ZONE_KEY = "time_zone"


_AREAS = ("Africa/", "America/", "Antarctica/", "Arctic/", "Asia/", "Atlantic/", "Australia/", "Europe/", "Indian/")


@functools.cache
def time_zone_names() -> frozenset[str]:
    """The IANA zone names a user may choose: Area/Location names this machine's tz database knows, and UTC.

    The database's old country and US/ aliases (``Japan``, ``US/Eastern``, ``Factory``) are left out of the list.
    """
    return frozenset(z for z in zoneinfo.available_timezones() if z.startswith((*_AREAS, "Pacific/")) or z == "UTC")


def user_time_zone(user: User) -> str:
    """The zone ``user`` chose; empty for the platform's default."""
    return UserProfile.objects.filter(user=user).values_list("time_zone", flat=True).first() or ""


def current_membership(user: User, session: SessionBase | None) -> Membership | None:
    """The membership a console session acts as (HTTP and WebSocket alike).

    The session's organization when the user still belongs to it; else (a new log-in) the organization the user
    chose last (``Membership.chosen_at``), else the personal organization, else the oldest membership; None for a
    user with no organization.
    """
    memberships = Membership.objects.filter(user=user).select_related("org")
    wanted = session.get(SESSION_ORG_KEY) if session is not None else None
    membership = memberships.filter(org_id=wanted).first() if wanted else None
    if membership is None:
        membership = memberships.order_by(F("chosen_at").desc(nulls_last=True), "-org__personal", "created_at").first()
    return membership


def memberships_of_user(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("org").order_by("-org__personal", "org__name")


def org_members(org: Organization) -> QuerySet[Membership]:
    return Membership.objects.for_org(org).select_related("user").order_by("created_at")


def org_pending_invitations(org: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.for_org(org).filter(accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())


def org_api_keys(org: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.for_org(org).select_related("created_by").order_by("-created_at")


def apikey_by_plaintext(raw: str) -> ApiKey | None:
    """The active key for a plaintext ``sk-`` key, or None (unknown, revoked or expired)."""
    if not raw or not raw.startswith("sk-"):
        return None
    key = ApiKey.objects.select_related("org").filter(key_hash=hash_api_key(raw)).first()
    if key is None or not key.is_active():
        return None
    return key


def org_audit_events(org: Organization, limit: int = 100) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.for_org(org).select_related("actor")[:limit]
