"""The console banner: warns an org whose spendable balance is low or gone, before its services are stopped."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from billing.selectors import balance_state


def billing_banner(request: HttpRequest) -> dict[str, Any]:
    org = getattr(request, "org", None)
    if org is None or not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    if request.path.startswith(("/admin/", "/api/", "/v1/")):
        return {}
    state = balance_state(org)
    if not (state.low or state.overdrawn_since):
        return {}
    return {"billing_banner": state}
