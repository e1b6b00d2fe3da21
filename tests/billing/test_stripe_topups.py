"""Top-ups through the official stripe SDK against localstripe, credited only by the signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import stripe
from django.db import connection
from django.test import Client

from billing import services
from billing.models import BillingAccount, EntryKind, LedgerEntry, StripeEvent, TopUp, TopUpStatus

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SECRET = "whsec_test_billing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def localstripe(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("localstripe")), "--port", str(port), "--from-scratch"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{base}/v1/customers", auth=("sk_test_x", ""), timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("localstripe did not start")
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def stripe_settings(settings, localstripe, live_server):
    settings.STRIPE_SECRET_KEY = "sk_test_billing"
    settings.STRIPE_API_BASE = localstripe
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    httpx.post(
        f"{localstripe}/_config/webhooks/maas",
        data={"url": f"{live_server.url}/billing/stripe/webhook/", "secret": SECRET},
    ).raise_for_status()
    return stripe.StripeClient("sk_test_billing", base_addresses={"api": localstripe})


def _pay(client: stripe.StripeClient, topup: TopUp, card: str) -> None:
    """What Stripe.js does in the browser: attach a card to the PaymentIntent and confirm it."""
    pm = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    client.v1.payment_intents.update(topup.payment_intent_id, params={"payment_method": pm.id})
    try:
        client.v1.payment_intents.confirm(topup.payment_intent_id)
    except stripe.CardError:
        pass  # a declined card: the failure also arrives as a webhook


def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _sign(payload: bytes, secret: str = SECRET) -> str:
    ts = int(time.time())
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={sig}"


def _post_event(payload: bytes, signature: str):
    return Client().post(
        "/billing/stripe/webhook/", data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


def _balance(org) -> Decimal:
    return BillingAccount.objects.get(org=org).balance


def test_paid_topup_is_credited_once_by_the_webhook(stripe_settings, org, alice, alice_client, charlie_client):
    response = alice_client.post("/billing/topup/", {"amount": "100.50"})
    topup = TopUp.objects.get(org=org)
    assert response.status_code == 302 and response["Location"] == f"/billing/topup/{topup.pk}/"
    assert topup.status == TopUpStatus.PENDING and _balance(org) == 0  # nothing before Stripe confirms
    intent = stripe_settings.v1.payment_intents.retrieve(topup.payment_intent_id)
    assert intent.amount == 10050 and intent.currency == "cny"
    assert intent.customer == BillingAccount.objects.get(org=org).stripe_customer_id
    assert charlie_client.get(f"/billing/topup/{topup.pk}/").status_code == 404

    _pay(stripe_settings, topup, "4242424242424242")
    assert _wait_for(lambda: TopUp.objects.get(pk=topup.pk).status == TopUpStatus.SUCCEEDED)
    assert _balance(org) == Decimal("100.50")

    # The same event delivered again (Stripe retries) credits nothing more.
    event = StripeEvent.objects.get(type="payment_intent.succeeded")
    payload = json.dumps(event.payload).encode()
    assert _post_event(payload, _sign(payload)).status_code == 200
    assert _balance(org) == Decimal("100.50")
    assert LedgerEntry.objects.filter(org=org, kind=EntryKind.TOPUP).count() == 1
    page = alice_client.get(f"/billing/topup/{topup.pk}/").content.decode()
    assert "Paid" in page

    # A second top-up reuses the org's Stripe customer.
    alice_client.post("/billing/topup/", {"amount": "10"})
    assert len({t.payment_intent_id for t in TopUp.objects.filter(org=org)}) == 2
    assert stripe_settings.v1.customers.list().data.__len__() == 1


def test_bad_signature_is_rejected_and_credits_nothing(stripe_settings, org, alice):
    topup = services.topup_create(org=org, amount=Decimal("50"), actor=alice)
    event = {
        "id": "evt_forged",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": topup.payment_intent_id,
                "object": "payment_intent",
                "amount": 5000,
                "amount_received": 5000,
                "currency": "cny",
            }
        },
    }
    payload = json.dumps(event).encode()
    assert _post_event(payload, _sign(payload, secret="whsec_wrong")).status_code == 400
    assert _post_event(payload, "").status_code == 400
    assert _post_event(payload + b" ", _sign(payload)).status_code == 400  # body changed after signing
    assert not StripeEvent.objects.exists()
    assert TopUp.objects.get(pk=topup.pk).status == TopUpStatus.PENDING
    assert not LedgerEntry.objects.filter(org=org).exists()


def test_declined_card_marks_the_topup_failed(stripe_settings, org, alice, alice_client):
    topup = services.topup_create(org=org, amount=Decimal("20"), actor=alice)
    _pay(stripe_settings, topup, "4000000000000341")
    assert _wait_for(lambda: TopUp.objects.get(pk=topup.pk).status == TopUpStatus.FAILED)
    topup.refresh_from_db()
    assert topup.failure_message and not LedgerEntry.objects.filter(org=org).exists()
    assert topup.failure_message in alice_client.get("/billing/topup/").content.decode()


def test_refund_debits_once_per_refunded_amount(stripe_settings, org, alice, admin_user):
    topup = services.topup_create(org=org, amount=Decimal("80"), actor=alice)
    _pay(stripe_settings, topup, "4242424242424242")
    assert _wait_for(lambda: TopUp.objects.get(pk=topup.pk).status == TopUpStatus.SUCCEEDED)
    topup.refresh_from_db()
    services.topup_refund(topup=topup, amount=Decimal("30"), actor=admin_user)
    intent = stripe_settings.v1.payment_intents.retrieve(topup.payment_intent_id)
    latest = intent.latest_charge
    charge = stripe_settings.v1.charges.retrieve(latest if isinstance(latest, str) else latest.id)
    assert charge.amount_refunded == 3000
    # localstripe does not emit charge.refunded; deliver Stripe's event for the real charge ourselves, signed.
    for event_id in ("evt_refund_1", "evt_refund_1", "evt_refund_2"):  # a replay and a duplicate event
        payload = json.dumps({"id": event_id, "type": "charge.refunded", "data": {"object": charge.to_dict()}}).encode()
        assert _post_event(payload, _sign(payload)).status_code == 200
    topup.refresh_from_db()
    assert topup.status == TopUpStatus.PARTIALLY_REFUNDED and topup.refunded_amount == Decimal("30")
    assert _balance(org) == Decimal("50")
    assert LedgerEntry.objects.filter(org=org, kind=EntryKind.REFUND).count() == 1


def test_topup_amount_is_validated(stripe_settings, org, alice_client):
    for amount in ("0", "5", "1000001", "10.001", "abc"):
        response = alice_client.post("/billing/topup/", {"amount": amount})
        assert response.status_code == 200 and "error" in response.content.decode()
    assert not TopUp.objects.exists()


def _row(topup: TopUp) -> str:
    """Every column of the top-up as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM billing_topup WHERE id = %s", [topup.pk])
        return " ".join(str(value) for value in cursor.fetchone())


def test_the_client_secret_is_encrypted_and_dropped_once_paid(stripe_settings, settings, org, alice, alice_client):
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_billing"
    declined, paid = (services.topup_create(org=org, amount=Decimal("20"), actor=alice) for _ in range(2))
    secrets = {
        t.pk: stripe_settings.v1.payment_intents.retrieve(t.payment_intent_id).client_secret for t in (declined, paid)
    }
    for topup in (declined, paid):
        secret = secrets[topup.pk]
        assert secret and secret.split("_secret_")[1] not in _row(topup)
        # The card page still hands it to Stripe.js while the top-up can be paid.
        assert secret in alice_client.get(f"/billing/topup/{topup.pk}/").content.decode()

    _pay(stripe_settings, declined, "4000000000000341")  # the card form stays for another try
    _pay(stripe_settings, paid, "4242424242424242")
    assert _wait_for(lambda: TopUp.objects.get(pk=declined.pk).status == TopUpStatus.FAILED)
    assert _wait_for(lambda: TopUp.objects.get(pk=paid.pk).status == TopUpStatus.SUCCEEDED)

    assert secrets[declined.pk] in alice_client.get(f"/billing/topup/{declined.pk}/").content.decode()
    assert TopUp.objects.get(pk=paid.pk).client_secret_encrypted == ""
    page = alice_client.get(f"/billing/topup/{paid.pk}/").content.decode()
    assert secrets[paid.pk] not in page and 'id="payment-form"' not in page
