from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from billing.models import EntryKind
from core.forms import IsoDateInput

if TYPE_CHECKING:
    from deployments.models import Service


class TopUpForm(forms.Form):
    amount = forms.DecimalField(
        label=_("Amount"),
        max_digits=12,
        decimal_places=2,
        min_value=Decimal("0.01"),
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal"}),
    )

    def __init__(self, *args: Any, currency: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["amount"].help_text = _("Between %(min)s and %(max)s %(currency)s.") % {
            "min": settings.BILLING_TOPUP_MIN,
            "max": settings.BILLING_TOPUP_MAX,
            "currency": currency,
        }


class LedgerFilterForm(forms.Form):
    kind = forms.ChoiceField(label=_("Type"), required=False, choices=[("", _("All"))] + list(EntryKind.choices))
    start = forms.DateField(label=_("From"), required=False, widget=IsoDateInput())
    end = forms.DateField(label=_("To"), required=False, widget=IsoDateInput())

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError(_("The start date must not be after the end date."))
        return data


class SubscriptionForm(forms.Form):
    service = forms.ChoiceField(label=_("Service"))
    instances = forms.IntegerField(label=_("Instances"), min_value=1, max_value=64, initial=1)
    auto_renew = forms.BooleanField(label=_("Renew automatically every month"), required=False, initial=True)

    def __init__(self, *args: Any, services: Iterable[Service] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["service"]).choices = [(str(s.pk), s.name) for s in services]


class AddInstancesForm(forms.Form):
    instances = forms.IntegerField(label=_("Add instances"), min_value=1, max_value=64, initial=1)


class AccountCreditForm(forms.Form):
    """A platform admin's credit to an organization (negative: a debit), with the reason the ledger keeps."""

    amount = forms.DecimalField(
        label=_("Amount"),
        max_digits=14,
        decimal_places=2,
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal"}),
        help_text=_("Positive credits the balance, negative debits it; posted as an adjustment."),
    )
    reason = forms.CharField(label=_("Reason"), max_length=300)
    # names this rendering of the form: submitting it twice (a double click, a resent POST) credits once
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import secrets

        super().__init__(*args, **kwargs)
        self.fields["token"].initial = secrets.token_urlsafe(16)
