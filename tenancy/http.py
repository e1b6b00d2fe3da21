"""The console request as views see it: what ``login_required`` and the platform's middleware attach to it.

A type for mypy only (Django still passes a plain ``HttpRequest``): annotate a console view's ``request`` with
``ConsoleRequest`` to read ``request.user`` as a ``User`` and ``request.org`` / ``request.membership``
(``CurrentOrgMiddleware``; None for a user with no organization) and ``request.htmx`` (django-htmx) typed.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import Http404, HttpRequest
from django_htmx.middleware import HtmxDetails

from tenancy.models import Membership, Organization


class ConsoleRequest(HttpRequest):
    user: User  # login_required: never anonymous
    org: Organization | None
    membership: Membership | None
    htmx: HtmxDetails


def membership_or_404(request: ConsoleRequest) -> Membership:
    """The membership the request acts as; a user with no organization gets a 404."""
    if request.membership is None:
        raise Http404("No organization")
    return request.membership
