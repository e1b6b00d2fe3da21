"""``request.org`` and ``request.membership``: the session's current organization, for every console request."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from tenancy.selectors import SESSION_ORG_KEY, current_membership


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
