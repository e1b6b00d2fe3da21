from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _

from core.forms import IsoDateTimeInput
from tenancy.models import Role, SpendPeriod, namespace_validator
from tenancy.selectors import time_zone_names


class SignupForm(forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=100, required=False)
    email = forms.EmailField(label=_("E-mail"))
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class EmailAuthenticationForm(AuthenticationForm):
    """The log-in form: an account's user name is its e-mail address, so the field says so."""

    username = forms.CharField(
        label=_("E-mail"),
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )

    def clean_username(self) -> str:
        # Accounts are stored under the lower-cased address (``user_signup``): Alice@Example.com logs in too.
        return str(self.cleaned_data["username"]).strip().lower()


class OrgCreateForm(forms.Form):
    name = forms.CharField(label=_("Organization name"), max_length=100)
    namespace = forms.CharField(
        label=_("Namespace"),
        max_length=40,
        validators=[namespace_validator],
        help_text=_("Used in model ids such as <namespace>/<service>. Lowercase letters, digits, hyphens."),
    )


class InviteForm(forms.Form):
    email = forms.EmailField(label=_("E-mail"))
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class ApiKeyForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    expires_at = forms.DateTimeField(
        label=_("Expires at"),
        required=False,
        widget=IsoDateTimeInput(),
        help_text=_("Leave empty for a key that does not expire."),
    )
    rpm_limit = forms.IntegerField(label=_("Requests per minute"), required=False, min_value=1)
    tpm_limit = forms.IntegerField(label=_("Tokens per minute"), required=False, min_value=1)
    allowed_models = forms.CharField(
        label=_("Allowed models"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "public/qwen2.5-7b-instruct"}),
        help_text=_("One model id per line or comma-separated; empty allows every model of the organization."),
    )
    spend_cap = forms.DecimalField(label=_("Spend cap"), required=False, min_value=0, max_digits=18, decimal_places=2)
    spend_cap_period = forms.ChoiceField(
        label=_("Cap resets"),
        required=False,
        choices=[("", "—")] + list(SpendPeriod.choices),
    )
    manage = forms.BooleanField(
        label=_("Management API"),
        required=False,
        help_text=_(
            "Also allow the /api management endpoints (deploy, scale, stop services), as far as your role allows. "
            "Without it the key can only call models (/v1)."
        ),
    )

    def clean_allowed_models(self) -> list[str]:
        raw: str = self.cleaned_data.get("allowed_models") or ""
        return [m.strip() for m in raw.replace(",", "\n").splitlines() if m.strip()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("spend_cap") is not None and not data.get("spend_cap_period"):
            self.add_error("spend_cap_period", _("Choose when the spend cap resets."))
        return data


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(
        label=_("Time zone"),
        required=False,
        help_text=_("Times in the console are shown in this zone."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        default = _("Platform default (%(zone)s)") % {"zone": settings.TIME_ZONE}
        cast(forms.ChoiceField, self.fields["time_zone"]).choices = [("", default)] + [
            (z, z) for z in sorted(time_zone_names())
        ]
