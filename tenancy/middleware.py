"""``request.org`` and ``request.membership``: the session's current organization, for every console request; and
the time zone a console request shows times in."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from tenancy.selectors import SESSION_ORG_KEY, SESSION_TIME_ZONE_KEY, current_membership, user_time_zone


class CurrentOrgMiddleware:
    """Attach ``request.org`` and ``request.membership`` for logged-in users (None for visitors)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.org = None  # type: ignore[attr-defined]
        request.membership = None  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            membership = current_membership(user, request.session)
            if membership is not None:
                if request.session.get(SESSION_ORG_KEY) != str(membership.org_id):
                    request.session[SESSION_ORG_KEY] = str(membership.org_id)
                request.membership = membership  # type: ignore[attr-defined]
                request.org = membership.org  # type: ignore[attr-defined]
        return self.get_response(request)


class UserTimeZoneMiddleware:
    """Show times in the signed-in user's time zone (``UserProfile.time_zone``), else in ``settings.TIME_ZONE``.

    The zone is kept in the session: read at log-in (``session_time_zone_load``) and set when the user changes it, so
    a request costs no query; another session of the same user picks a change up at its next log-in. Only display
    follows it: Celery work (instance-hour settlement) runs in the platform's zone.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        name: str = ""
        if user is not None and user.is_authenticated:
            kept = request.session.get(SESSION_TIME_ZONE_KEY)
            if kept is None:  # a session from before zones were kept in it
                kept = request.session[SESSION_TIME_ZONE_KEY] = user_time_zone(user)
            name = str(kept)
        try:
            zone = zoneinfo.ZoneInfo(name) if name else None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # a zone this machine's tz database no longer has
            zone = None
        if zone is None:
            return self.get_response(request)
        timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def session_time_zone_load(sender: object, request: HttpRequest, user: object, **kwargs: object) -> None:
    """``user_logged_in`` receiver: keep the user's time zone in the new session."""
    request.session[SESSION_TIME_ZONE_KEY] = user_time_zone(user)  # type: ignore[arg-type]
