"""Template context for every console page: navigation, current org, org switcher."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

from tenancy.selectors import memberships_of_user

# (url name, label, needs login, admin only). Entries whose URL does not exist yet are not shown.
NAVIGATION = [
    ("catalog:marketplace", _("Marketplace"), False, False),
    ("deployments:services", _("Services"), True, False),
    ("playground:index", _("Playground"), True, False),
    ("apikeys", _("API keys"), True, False),
    ("billing:overview", _("Billing"), True, False),
    ("metering:usage", _("Usage"), True, False),
    ("deployments:clusters", _("Clusters"), True, True),
    ("billing:accounts", _("Accounts"), True, True),
    ("deployments:gpu-quotas", _("Quotas"), True, True),
]


def _resolvable(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def console(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is not None and not user.is_authenticated:
        user = None
    logged_in = user is not None
    nav: list[dict[str, Any]] = []
    path = request.path
    for name, label, needs_login, admin_only in NAVIGATION:
        if needs_login and not logged_in:
            continue
        if admin_only and not (user is not None and user.is_staff):
            continue
        url = _resolvable(name)
        if url:
            nav.append({"url": url, "label": label, "active": False})
    # The entry whose URL is the longest prefix of the path is the current one (/billing/usage/ is Usage only).
    current = max(
        (item for item in nav if path.startswith(item["url"])), key=lambda item: len(item["url"]), default=None
    )
    if current is not None:
        current["active"] = True
    return {
        "nav_items": nav,
        "currency": settings.CURRENCY,
        "current_org": getattr(request, "org", None),
        "current_membership": getattr(request, "membership", None),
        "user_memberships": memberships_of_user(user) if user is not None else [],
    }
