"""Billing: one prepaid account per org, an append-only ledger, token prices with history, charges, top-ups."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.querysets import OrgScopedQuerySet

ZERO = Decimal("0")
# Amounts keep rate precision (6 places) so that per-token charges add up exactly; see core.money.
AMOUNT_DIGITS, AMOUNT_PLACES = 20, 6


class BillingAccount(models.Model):
    """The org's prepaid balance; only ``billing.services.ledger_post`` changes it, under a row lock."""

    org = models.OneToOneField(
        "maas.Organization", on_delete=models.CASCADE, related_name="billing_account", verbose_name=_("organization")
    )
    currency = models.CharField(max_length=3, verbose_name=_("currency"))
    balance = models.DecimalField(_("balance"), default=ZERO, max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)
    credit_limit = models.DecimalField(
        _("credit limit"),
        max_digits=14,
        decimal_places=2,
        default=ZERO,
        help_text=_("How far below zero the balance may go before requests are refused."),
    )
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    # When the spendable balance (balance + credit limit) last dropped to zero or below; cleared on recovery.
    overdrawn_since = models.DateTimeField(null=True, blank=True, verbose_name=_("overdrawn since"))
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("billing account")
        verbose_name_plural = _("billing accounts")
        constraints = [
            models.CheckConstraint(condition=models.Q(credit_limit__gte=0), name="account_credit_limit_gte_0")
        ]

    def __str__(self) -> str:
        return f"{self.org} {self.balance} {self.currency}"

    @property
    def spendable(self) -> Decimal:
        return self.balance + self.credit_limit


class EntryKind(models.TextChoices):
    TOPUP = "topup", _("Top-up")
    TOKEN_CHARGE = "token_charge", _("Token usage")
    INSTANCE_CHARGE = "instance_charge", _("Instance hours")
    SUBSCRIPTION_CHARGE = "subscription_charge", _("Subscription")
    REFUND = "refund", _("Refund")
    ADJUSTMENT = "adjustment", _("Adjustment")


CHARGE_KINDS = (EntryKind.TOKEN_CHARGE, EntryKind.INSTANCE_CHARGE, EntryKind.SUBSCRIPTION_CHARGE)


class LedgerEntry(models.Model):
    """One change of an account's balance. Append-only; ``key`` makes every posting idempotent."""

    org = models.ForeignKey(
        "maas.Organization", on_delete=models.CASCADE, related_name="ledger_entries", verbose_name=_("organization")
    )
    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=24, choices=EntryKind.choices, verbose_name=_("kind"))
    # Credits are positive, charges negative.
    amount = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, verbose_name=_("amount"))
    balance_after = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, verbose_name=_("balance after")
    )
    currency = models.CharField(max_length=3, verbose_name=_("currency"))
    # The natural idempotency key: usage batch, service + meter window, subscription period, Stripe object.
    key = models.CharField(max_length=200, unique=True, verbose_name=_("key"))
    # In English (search, CSV, API); shown translated from the code when it has one (billing.texts.LEDGER). An
    # adjustment's description is the administrator's reason, as typed.
    description = models.CharField(max_length=300, blank=True)
    description_code = models.CharField(max_length=64, blank=True)
    description_params = models.JSONField(default=dict, blank=True)
    service = models.ForeignKey(
        "deployments.Service", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("created at"))

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["org", "-created_at"]), models.Index(fields=["org", "kind", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency} ({self.key})"

    @property
    def reference(self) -> str:
        """What a person can quote about this entry outside the platform (the card payment's or refund's id at
        Stripe); never ``key``, which is the platform's own idempotency key."""
        data = self.data if isinstance(self.data, dict) else {}
        return str(data.get("payment_intent") or data.get("charge") or "")

    @property
    def description_text(self) -> str:
        """The description in the reader's language."""
        from billing.texts import LEDGER

        if not self.description_code:
            return self.description
        return LEDGER.render(self.description_code, self.description_params, self.description)

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("Ledger entries are append-only")
        super().save(*args, **kwargs)


class TokenPrice(models.Model):
    """The per-token price of a public model from ``valid_from`` on; usage is charged with the row in force."""

    catalog_model = models.ForeignKey(
        "catalog.CatalogModel", on_delete=models.CASCADE, related_name="token_prices", verbose_name=_("catalog model")
    )
    currency = models.CharField(max_length=3, verbose_name=_("currency"))
    input_per_1k = models.DecimalField(_("input per 1K tokens"), max_digits=14, decimal_places=6)
    output_per_1k = models.DecimalField(_("output per 1K tokens"), max_digits=14, decimal_places=6)
    cached_input_per_1k = models.DecimalField(
        _("cached input per 1K tokens"), max_digits=14, decimal_places=6, null=True, blank=True
    )
    # Long-context tier: requests whose prompt exceeds this many tokens pay the long prices for the whole request.
    long_context_threshold = models.PositiveIntegerField(
        _("long-context threshold (prompt tokens)"), null=True, blank=True
    )
    long_input_per_1k = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    long_output_per_1k = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    valid_from = models.DateTimeField(default=timezone.now, verbose_name=_("valid from"))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("token price")
        verbose_name_plural = _("token prices")
        ordering = ["catalog_model", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["catalog_model", "valid_from"], name="token_price_unique_valid_from"),
            models.CheckConstraint(
                condition=models.Q(long_context_threshold__isnull=True)
                | (models.Q(long_input_per_1k__isnull=False) & models.Q(long_output_per_1k__isnull=False)),
                name="token_price_long_tier_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.catalog_model_id} from {self.valid_from:%Y-%m-%d %H:%M}"


class UsageCharge(models.Model):
    """The priced, charged form of one usage record; its uniqueness makes per-token charging exactly-once."""

    usage_record = models.OneToOneField("gateway.UsageRecord", on_delete=models.CASCADE, related_name="charge")
    org = models.ForeignKey("maas.Organization", on_delete=models.CASCADE, related_name="+")
    token_price = models.ForeignKey(TokenPrice, on_delete=models.PROTECT, related_name="+")
    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="usage_charges")
    amount = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)
    created_at = models.DateTimeField(default=timezone.now)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("usage charge")
        verbose_name_plural = _("usage charges")


class MeterCursor(models.Model):
    """How far a service's instance time has been charged (everything before ``charged_until`` is posted)."""

    service = models.OneToOneField("deployments.Service", on_delete=models.CASCADE, related_name="meter_cursor")
    charged_until = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("meter cursor")
        verbose_name_plural = _("meter cursors")


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    EXPIRED = "expired", _("Expired")
    CANCELLED = "cancelled", _("Cancelled")


class Subscription(models.Model):
    """A month of prepaid instances of a service (包年包月): covered instances pay no hourly charges."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(
        "maas.Organization", on_delete=models.CASCADE, related_name="subscriptions", verbose_name=_("organization")
    )
    service = models.ForeignKey(
        "deployments.Service", on_delete=models.CASCADE, related_name="subscriptions", verbose_name=_("service")
    )
    instances = models.PositiveSmallIntegerField(_("instances"))
    monthly_price = models.DecimalField(_("monthly price per instance"), max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    period_start = models.DateTimeField(verbose_name=_("period start"))
    period_end = models.DateTimeField(verbose_name=_("period end"))
    auto_renew = models.BooleanField(_("renew automatically"), default=True)
    status = models.CharField(
        max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE, verbose_name=_("status")
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Scale-ups buy extra instances for the rest of the parent's period as their own row, so that every row's
    # [period_start, period_end) × instances never changes once written and past coverage is never rewritten.
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="addons",
        verbose_name=_("parent subscription"),
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("subscription")
        verbose_name_plural = _("subscriptions")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "period_start"],
                condition=models.Q(parent__isnull=True),
                name="subscription_one_plan_per_period",
            ),
            models.CheckConstraint(condition=models.Q(instances__gt=0), name="subscription_instances_gt_0"),
            models.CheckConstraint(
                condition=models.Q(period_end__gt=models.F("period_start")), name="subscription_period_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} ×{self.instances} until {self.period_end:%Y-%m-%d}"


class TopUpStatus(models.TextChoices):
    PENDING = "pending", _("Awaiting payment")
    SUCCEEDED = "succeeded", _("Paid")
    FAILED = "failed", _("Failed")
    REFUNDED = "refunded", _("Refunded")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")


class TopUp(models.Model):
    """A Stripe PaymentIntent for a top-up; the balance is credited only by the verified webhook."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(
        "maas.Organization", on_delete=models.CASCADE, related_name="topups", verbose_name=_("organization")
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2, verbose_name=_("amount"))
    currency = models.CharField(max_length=3, verbose_name=_("currency"))
    payment_intent_id = models.CharField(max_length=100, unique=True, verbose_name=_("payment intent ID"))
    # The PaymentIntent's client secret, Fernet-encrypted (core.crypto): the card page hands it to Stripe.js while
    # the top-up can still be paid (pending, failed) and the payment webhook clears it.
    client_secret_encrypted = models.TextField(blank=True)
    status = models.CharField(
        max_length=24, choices=TopUpStatus.choices, default=TopUpStatus.PENDING, verbose_name=_("status")
    )
    refunded_amount = models.DecimalField(
        max_digits=14, decimal_places=2, default=ZERO, verbose_name=_("refunded amount")
    )
    failure_message = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("top-up")
        verbose_name_plural = _("top-ups")
        ordering = ["-created_at"]


class StripeEvent(models.Model):
    """Every verified webhook event we handled, once: replays of the same event id are no-ops."""

    event_id = models.CharField(max_length=100, unique=True, verbose_name=_("event ID"))
    type = models.CharField(max_length=100, verbose_name=_("type"))
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField(default=timezone.now, verbose_name=_("received at"))

    class Meta:
        verbose_name = _("Stripe event")
        verbose_name_plural = _("Stripe events")
