from decimal import Decimal

import pytest
from django.core.management import call_command

from billing.models import LedgerEntry
from tenancy.models import Organization


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_credits_once():
    call_command("seed_demo", verbosity=0)
    call_command("seed_demo", verbosity=0)
    demo = Organization.objects.get(namespace="demo")
    assert LedgerEntry.objects.filter(org=demo).count() == 1
    assert LedgerEntry.objects.get(org=demo).amount == Decimal("100.00")
    assert demo.memberships.count() == 2


@pytest.mark.django_db
def test_only_the_deepest_nav_entry_is_active(alice_client):
    from django.urls import reverse

    html = alice_client.get(reverse("metering:usage")).content.decode()
    assert html.count('aria-current="page"') == 1
