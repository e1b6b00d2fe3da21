"""Money in: the welcome credit, platform staff crediting any organization, and what a new ¥0 org is told."""

from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from billing import services
from billing.models import BillingAccount, LedgerEntry
from core.errors import PermissionDenied
from tenancy.models import AuditEvent, Organization
from tenancy.services import org_create, user_signup
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ACCOUNTS = reverse("billing:accounts")


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(email="root@example.com", is_staff=True))
    return client


def test_sign_up_gets_the_configured_welcome_credit_once(settings):
    settings.BILLING_WELCOME_CREDIT = Decimal("50")
    user = user_signup(email="new@example.com", password="correct-horse-battery")
    org = Organization.objects.get(memberships__user=user)
    entry = LedgerEntry.objects.get(org=org)
    assert (entry.key, entry.amount, entry.kind) == (f"welcome:{org.pk}", Decimal("50.00"), "adjustment")
    assert services.account_welcome_credit(org=org) == entry  # a replay posts nothing
    assert BillingAccount.objects.get(org=org).balance == Decimal("50.00")
    assert AuditEvent.objects.filter(org=org, action="billing.welcome_credit").count() == 1
    team = org_create(owner=user, name="Team", namespace="team")
    assert not LedgerEntry.objects.filter(org=team).exists()  # one welcome per user, to the sign-up org


def test_no_welcome_credit_by_default():
    user = user_signup(email="new@example.com", password="correct-horse-battery")
    assert not LedgerEntry.objects.filter(org__memberships__user=user).exists()


def test_staff_list_every_org_and_credit_one_without_an_account(staff_client, org, other_org):
    assert not BillingAccount.objects.filter(org=other_org).exists()
    listing = staff_client.get(ACCOUNTS).content.decode()
    assert "rival" in listing and "acme" in listing
    credit = reverse("billing:account-credit", args=[other_org.pk])
    token = staff_client.get(credit).context["form"]["token"].value()
    data = {"amount": "120", "reason": "pilot credit", "token": token}
    response = staff_client.post(credit, data)
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "¥120.00 posted to rival; its balance is now ¥120.00."
    ]
    staff_client.post(credit, data)  # a double submit credits once
    assert BillingAccount.objects.get(org=other_org).balance == Decimal("120.00")
    event = AuditEvent.objects.get(org=other_org, action="billing.adjust")
    assert event.actor.email == "root@example.com" and event.data["reason"] == "pilot credit"


def test_the_success_message_shows_the_new_balance(staff_client, org):
    services.ledger_adjust(org=org, amount=Decimal("10"), reason="earlier", actor=None)
    credit = reverse("billing:account-credit", args=[org.pk])
    token = staff_client.get(credit).context["form"]["token"].value()
    response = staff_client.post(credit, {"amount": "5.50", "reason": "more", "token": token}, follow=True)
    assert "its balance is now ¥15.50" in response.content.decode()


def test_only_platform_staff_credit(alice_client, alice, org):
    assert alice_client.get(ACCOUNTS).status_code == 404
    assert alice_client.post(reverse("billing:account-credit", args=[org.pk]), {"amount": "9"}).status_code == 404
    with pytest.raises(PermissionDenied):
        services.account_credit(org=org, amount=Decimal("9"), reason="self-service", actor=alice)
    assert not LedgerEntry.objects.filter(org=org).exists()


def test_a_new_org_is_told_how_to_add_credit_not_alarmed(alice_client, org, settings):
    settings.BILLING_CONTACT = "ops@example.com"
    overview = alice_client.get(reverse("billing:overview")).content.decode()
    assert "no credit yet" in overview and "alert-info billing-banner" in overview
    assert "Your balance is low" not in overview
    assert 'href="mailto:ops@example.com"' in overview and "credit organization “acme”" in overview
    assert "billing-banner" not in alice_client.get(reverse("playground:index")).content.decode()
    topup = alice_client.get(reverse("billing:topup")).content.decode()
    assert "ask an administrator" not in topup and "credit organization “acme”" in topup


def test_a_credited_org_that_runs_low_is_warned(alice_client, org):
    services.ledger_adjust(org=org, amount=Decimal("5"), reason="a little", actor=None)
    page = alice_client.get(reverse("playground:index")).content.decode()
    assert "Your balance is low (¥5.00)" in page and "alert-warning billing-banner" in page
