"""Helpers for console forms and views shared by every app."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest
from django.utils.translation import gettext_lazy as _

from core.errors import ApplicationError


def apply_error(form: forms.Form, exc: ApplicationError) -> None:
    """Show a service's domain error on the form: on its field when the form has one, else above the form."""
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


def actor_of(request: HttpRequest) -> User | None:
    """The signed-in user acting in ``request``; None for an anonymous one."""
    return request.user if isinstance(request.user, User) else None


def org_or_404(request: HttpRequest) -> Any:
    """The organization the console request acts for (``request.org``); a user with none gets a 404."""
    org = getattr(request, "org", None)
    if org is None:
        raise Http404("No organization")
    return org


class SecretTextarea(forms.Textarea):
    """A textarea for a pasted secret (a kubeconfig): like ``PasswordInput``, a re-rendered form never shows it back."""

    def format_value(self, value: Any) -> None:
        return None


class IsoDateInput(forms.DateInput):
    """A date typed as YYYY-MM-DD, with the format said in the page's language.

    Not ``type="date"``: a browser draws that control in its own UI language (an English Chromium shows
    "mm/dd/yyyy" on a Chinese page), so the page could not keep its language.
    """

    input_type = "text"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        defaults = {"placeholder": _("YYYY-MM-DD"), "inputmode": "numeric", "autocomplete": "off", "size": 10}
        super().__init__(attrs={**defaults, **(attrs or {})}, format="%Y-%m-%d")


class IsoDateTimeInput(forms.DateTimeInput):
    """A date and time typed as YYYY-MM-DD HH:MM (in the user's time zone); see ``IsoDateInput`` for why."""

    input_type = "text"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        defaults = {"placeholder": _("YYYY-MM-DD HH:MM"), "autocomplete": "off", "size": 16}
        super().__init__(attrs={**defaults, **(attrs or {})}, format="%Y-%m-%d %H:%M")


class Echo:
    """A file-like object whose write returns the line: lets ``csv.writer`` feed a streaming response."""

    def write(self, value: str) -> str:
        return value
