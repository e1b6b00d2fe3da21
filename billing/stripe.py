"""The only module that talks to Stripe: customers, PaymentIntents, refunds and webhook verification.

Amounts cross this boundary as integer minor units; everything else in the platform speaks Decimal.
``STRIPE_API_BASE`` points the official SDK at another server (tests use localstripe).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import stripe
from django.conf import settings
from django.utils.translation import gettext as _

from core.errors import ApplicationError
from core.money import to_minor_units

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses
    from stripe.params import CustomerCreateParams, PaymentIntentCreateParams, RefundCreateParams


class StripeNotConfigured(ApplicationError):
    pass


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    client_secret: str
    status: str


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def card_page_csp() -> dict[str, list[str]]:
    """What the card page adds to the console's Content-Security-Policy for Stripe.js (Stripe's published list)."""
    script = [_origin(settings.STRIPE_JS_URL), "https://*.js.stripe.com"]
    return {
        "script-src": script,
        "frame-src": [*script, "https://hooks.stripe.com"],
        "connect-src": [
            "https://api.stripe.com",
            *([_origin(settings.STRIPE_API_BASE)] if settings.STRIPE_API_BASE else []),
        ],
    }


def is_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _client() -> stripe.StripeClient:
    if not is_configured():
        raise StripeNotConfigured(
            _("Online payment is not configured on this platform."), code="stripe_not_configured", status=503
        )
    addresses: BaseAddresses | None = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses=addresses, max_network_retries=2)


def _fail(exc: stripe.StripeError) -> NoReturn:
    message = getattr(exc, "user_message", None) or _("The payment provider refused the request.")
    raise ApplicationError(message, code="payment_provider_error", status=502) from exc


def customer_create(*, org_id: str, name: str, email: str = "") -> str:
    params: CustomerCreateParams = {"name": name[:200], "metadata": {"org_id": org_id}}
    if email:
        params["email"] = email
    try:
        return _client().v1.customers.create(params=params).id
    except stripe.StripeError as exc:
        _fail(exc)


def payment_intent_create(
    *, customer_id: str, amount: Decimal, currency: str, metadata: dict[str, Any]
) -> PaymentIntent:
    params: PaymentIntentCreateParams = {
        "amount": to_minor_units(amount, currency),
        "currency": currency.lower(),
        "customer": customer_id,
        "metadata": {k: str(v) for k, v in metadata.items()},
    }
    try:
        intent = _client().v1.payment_intents.create(params=params)
    except stripe.StripeError as exc:
        _fail(exc)
    return PaymentIntent(id=intent.id, client_secret=intent.client_secret or "", status=intent.status)


def refund_create(*, payment_intent_id: str, amount: Decimal | None, currency: str) -> str:
    params: RefundCreateParams = {"payment_intent": payment_intent_id}
    if amount is not None:
        params["amount"] = to_minor_units(amount, currency)
    try:
        return _client().v1.refunds.create(params=params).id
    except stripe.StripeError as exc:
        _fail(exc)


class BadSignature(Exception):
    pass


def webhook_event(payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event, as a plain dict, if ``signature`` proves Stripe sent ``payload``; raises BadSignature otherwise."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret or not signature:
        raise BadSignature("missing webhook secret or signature")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, secret, tolerance=settings.STRIPE_WEBHOOK_TOLERANCE
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise BadSignature(str(exc)) from exc
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise BadSignature("payload is not JSON") from exc
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise BadSignature("payload is not an event")
    return event
