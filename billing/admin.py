"""Platform admin for billing: credit limits and manual adjustments go through services (audited)."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from billing import services
from billing.models import BillingAccount, LedgerEntry, StripeEvent, Subscription, TokenPrice, TopUp
from core.errors import ApplicationError
from core.forms import actor_of


class BillingAccountForm(forms.ModelForm):
    adjust_amount = forms.DecimalField(
        label=_("Adjust balance by"),
        required=False,
        max_digits=14,
        decimal_places=2,
        help_text=_("Positive credits, negative debits; posted as an adjustment."),
    )
    adjust_reason = forms.CharField(label=_("Reason for the adjustment"), required=False, max_length=300)
    # names this rendering of the form: submitting it twice (a double click, a resent POST) posts one adjustment
    adjust_token = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["adjust_token"].initial = secrets.token_urlsafe(16)

    class Meta:
        model = BillingAccount
        fields = ["credit_limit"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("adjust_amount") and not (data.get("adjust_reason") or "").strip():
            self.add_error("adjust_reason", _("Give a reason for the adjustment."))
        return data


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    form = BillingAccountForm
    list_display = ["org", "balance", "credit_limit", "currency", "overdrawn_since", "updated_at"]
    search_fields = ["org__name", "org__namespace"]
    readonly_fields = ["org", "balance", "currency", "stripe_customer_id", "overdrawn_since"]
    list_select_related = ["org"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: BillingAccount, form: BillingAccountForm, change: bool) -> None:
        try:
            if "credit_limit" in form.changed_data:
                services.account_set_credit_limit(
                    org=obj.org, credit_limit=form.cleaned_data["credit_limit"], actor=actor_of(request)
                )
            amount = form.cleaned_data.get("adjust_amount")
            if amount:
                services.account_credit(
                    org=obj.org,
                    amount=Decimal(amount),
                    reason=form.cleaned_data["adjust_reason"],
                    actor=actor_of(request),
                    token=form.cleaned_data.get("adjust_token") or None,
                )
        except ApplicationError as exc:
            messages.error(request, exc.message)
        obj.refresh_from_db()  # the change message names the account with its new balance


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "org", "kind", "amount", "balance_after", "currency", "key"]
    list_filter = ["kind"]
    search_fields = ["org__namespace", "key", "description"]
    list_select_related = ["org"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class TokenPriceForm(forms.ModelForm):
    class Meta:
        model = TokenPrice
        fields = [
            "catalog_model",
            "input_per_1k",
            "output_per_1k",
            "cached_input_per_1k",
            "long_context_threshold",
            "long_input_per_1k",
            "long_output_per_1k",
            "valid_from",
        ]


@admin.register(TokenPrice)
class TokenPriceAdmin(admin.ModelAdmin):
    """Prices are history: a change is a new row from its start; existing rows are never edited."""

    form = TokenPriceForm
    list_display = [
        "catalog_model",
        "valid_from",
        "input_per_1k",
        "output_per_1k",
        "cached_input_per_1k",
        "long_context_threshold",
        "currency",
    ]
    list_filter = ["catalog_model"]
    list_select_related = ["catalog_model"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: TokenPrice, form: TokenPriceForm, change: bool) -> None:
        data = form.cleaned_data
        try:
            price = services.token_price_create(
                catalog_model=data["catalog_model"],
                input_per_1k=data["input_per_1k"],
                output_per_1k=data["output_per_1k"],
                cached_input_per_1k=data["cached_input_per_1k"],
                long_context_threshold=data["long_context_threshold"],
                long_input_per_1k=data["long_input_per_1k"],
                long_output_per_1k=data["long_output_per_1k"],
                valid_from=data["valid_from"],
                actor=actor_of(request),
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            obj.pk, obj._state.adding = price.pk, False


@admin.register(TopUp)
class TopUpAdmin(admin.ModelAdmin):
    list_display = ["created_at", "org", "amount", "currency", "status", "refunded_amount", "payment_intent_id"]
    list_filter = ["status"]
    search_fields = ["org__namespace", "payment_intent_id"]
    exclude = ["client_secret_encrypted"]  # a secret: never shown, even encrypted
    readonly_fields = [f.name for f in TopUp._meta.fields if f.name != "client_secret_encrypted"]
    actions = ["refund_in_full"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Refund the rest of the selected top-ups through Stripe"))
    def refund_in_full(self, request: HttpRequest, queryset: QuerySet[TopUp]) -> None:
        for topup in queryset:
            try:
                services.topup_refund(topup=topup, amount=topup.amount - topup.refunded_amount, actor=actor_of(request))
            except ApplicationError as exc:
                messages.error(request, f"{topup.payment_intent_id}: {exc.message}")
            else:
                messages.success(request, _("Refund requested for %(pi)s.") % {"pi": topup.payment_intent_id})


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["service", "org", "instances", "period_start", "period_end", "auto_renew", "status", "parent"]
    list_filter = ["status", "auto_renew"]
    readonly_fields = [f.name for f in Subscription._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ["received_at", "event_id", "type"]
    search_fields = ["event_id", "type"]
    readonly_fields = ["event_id", "type", "payload", "received_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
