"""The console banner: warns an org whose spendable balance is low or gone, before its services are stopped, and
tells a new organization with nothing yet how to add credit."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from billing import stripe as stripe_api
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
    # A new organization with nothing yet gets a note on how to add credit where money matters (billing, services),
    # not an alarm on every page.
    if state.unfunded and not request.path.startswith((reverse("billing:overview"), reverse("deployments:services"))):
        return {}
    return {"billing_banner": state, **credit_help()}


def credit_help() -> dict[str, Any]:
    """How a user adds credit here: card top-ups when Stripe is configured, else whom to ask."""
    return {"card_topup": stripe_api.is_configured(), "billing_contact": settings.BILLING_CONTACT}
