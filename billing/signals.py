"""Receivers that turn other apps' facts into billing work (the work itself lives in billing.services).

``subscription_cover_requested`` runs inside the deploy's transaction: a refusal rolls the deploy back.
``charge_quote_requested`` answers the deploy and scale pages with the price billing will charge.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from catalog.models import CatalogModel
from deployments.models import EventKind, Service
from deployments.signals import charge_quote_requested, subscription_cover_requested

if TYPE_CHECKING:
    from deployments.models import ServiceEvent

logger = logging.getLogger(__name__)


@receiver(post_save, sender="catalog.CatalogModel", dispatch_uid="billing.catalog_price_history")
def catalog_model_saved(sender: type[CatalogModel], instance: CatalogModel, **kwargs: Any) -> None:
    """Admin edits and catalog syncs of a model's prices start a new price from now on."""
    from billing.services import token_price_sync

    token_price_sync(catalog_model=instance)


@receiver(post_save, sender="maas.Organization", dispatch_uid="billing.welcome_credit")
def organization_saved(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    """A personal organization (the one a user gets at sign-up) starts with the welcome credit, posted in the
    sign-up's transaction: one per user; team organizations created later get none."""
    if created and instance.personal and not kwargs.get("raw"):
        from billing.services import account_welcome_credit

        account_welcome_credit(org=instance)


@receiver(post_save, sender="deployments.ServiceEvent", dispatch_uid="billing.meter_settle")
def service_event_saved(sender: type[ServiceEvent], instance: ServiceEvent, created: bool, **kwargs: Any) -> None:
    """A change of Running instances (scale, stop, delete) settles the service's instance time so far."""
    if not created or instance.kind != EventKind.METER:
        return
    service_id = instance.service_id

    def enqueue() -> None:
        from billing.tasks import settle_service_task

        try:
            settle_service_task.delay(str(service_id))
        except Exception:  # broker down: the periodic settlement catches up
            logger.exception("could not enqueue the settlement of service %s", service_id)

    transaction.on_commit(enqueue)


@receiver(subscription_cover_requested, dispatch_uid="billing.subscription_cover")
def subscription_cover_requested_received(
    sender: type, *, service: Service, instances: int, actor: Any, **kwargs: Any
) -> None:
    """Pay for a subscription-mode service's instances in the deploy's own transaction (raises when funds lack)."""
    from billing.services import subscription_cover

    subscription_cover(service=service, instances=instances, actor=actor)


@receiver(charge_quote_requested, dispatch_uid="billing.charge_quote")
def charge_quote_requested_received(sender: type, **kwargs: Any) -> Any:
    """The deploy and scale pages' price, from billing's own rules (``billing.selectors.charge_quote``)."""
    from billing.selectors import charge_quote

    return charge_quote(
        **{key: kwargs[key] for key in QUOTE_ARGUMENTS},
        **{key: kwargs[key] for key in QUOTE_OPTIONAL if kwargs.get(key) is not None},
    )


QUOTE_ARGUMENTS = ("org", "region", "gpu_product", "gpu_count", "instances", "billing_mode", "service")
# An autoscaling deploy or scale also sends its bounds: the quote then carries the hourly range and the estimate.
QUOTE_OPTIONAL = ("min_instances", "max_instances")
