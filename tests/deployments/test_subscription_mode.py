"""Deploying and scaling in subscription mode (包年包月) pays a month per instance up front, or deploys nothing."""

from decimal import Decimal

import pytest

from billing.models import LedgerEntry, Subscription
from billing.services import ledger_adjust
from core.errors import ApplicationError
from deployments.models import BillingMode, Region, Service
from deployments.services import service_create, service_scale


@pytest.fixture
def local_region(db, catalog):
    from django.core.management import call_command

    call_command("seed_platform", verbosity=0)
    return Region.objects.get(code="cn-shanghai-2")


def _model():
    from catalog.models import CatalogModel

    return CatalogModel.objects.get(slug="qwen2-0.5b-instruct")


@pytest.mark.django_db
def test_subscription_deploy_without_funds_deploys_nothing(org, alice, local_region):
    with pytest.raises(ApplicationError):
        service_create(
            org=org,
            actor=alice,
            catalog_model=_model(),
            region=local_region,
            name="subbed",
            instances=1,
            billing_mode=BillingMode.SUBSCRIPTION,
        )
    assert not Service.objects.filter(name="subbed").exists()
    assert not Subscription.objects.exists() and not LedgerEntry.objects.filter(org=org).exists()


@pytest.mark.django_db
def test_subscription_deploy_pays_a_month_and_scale_up_buys_the_difference(org, alice, local_region):
    ledger_adjust(org=org, amount=Decimal("10000"), reason="test funds", actor=alice)
    service = service_create(
        org=org,
        actor=alice,
        catalog_model=_model(),
        region=local_region,
        name="subbed",
        instances=1,
        billing_mode=BillingMode.SUBSCRIPTION,
    )
    first = Subscription.objects.get(service=service, parent=None)
    assert first.instances == 1
    month = LedgerEntry.objects.get(key=f"subscription:{first.pk}")
    assert month.amount == -service.monthly_price.quantize(Decimal("0.01"))

    service_scale(service=service, actor=alice, instances=3)
    addon = Subscription.objects.get(parent=first)
    assert addon.instances == 2
    prorated = LedgerEntry.objects.get(key=f"subscription:{addon.pk}")
    assert Decimal("0") > prorated.amount >= -2 * service.monthly_price

    service_scale(service=service, actor=alice, instances=2)  # scaling down buys nothing
    assert Subscription.objects.filter(service=service).count() == 2


@pytest.mark.django_db
def test_subscription_mode_is_refused_when_no_billing_is_connected(org, alice, local_region):
    from billing.signals import subscription_cover_requested_received
    from deployments.signals import subscription_cover_requested

    ledger_adjust(org=org, amount=Decimal("10000"), reason="test funds", actor=alice)
    create = dict(org=org, actor=alice, catalog_model=_model(), region=local_region, instances=1)
    service = service_create(name="subbed", billing_mode=BillingMode.SUBSCRIPTION, **create)
    assert subscription_cover_requested.disconnect(dispatch_uid="billing.subscription_cover")
    try:
        with pytest.raises(ApplicationError) as refused:
            service_create(name="free-ride", billing_mode=BillingMode.SUBSCRIPTION, **create)
        assert refused.value.code == "billing_unavailable"
        with pytest.raises(ApplicationError, match="Subscription billing is not available"):
            service_scale(service=service, actor=alice, instances=3)
        payg = service_create(name="payg", **create)  # pay-as-you-go needs nothing up front
    finally:
        subscription_cover_requested.connect(
            subscription_cover_requested_received, dispatch_uid="billing.subscription_cover"
        )
    assert not Service.objects.filter(name="free-ride").exists()
    assert Service.objects.get(pk=service.pk).instances == 1
    assert Subscription.objects.filter(service=service).count() == 1
    assert payg.billing_mode == BillingMode.PAYG
