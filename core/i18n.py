"""Texts the platform writes down (timeline messages, ledger descriptions) are translated when read, not when written.

A text written by a Celery worker would otherwise be stored in the worker's language (English), and one written
during a request in that user's language, so the next reader of the row sees whichever. Instead each app keeps a
``Texts`` catalogue: a stable code per message mapped to its ``gettext_lazy`` (or ``ngettext_lazy``, for plurals)
template. A writer stores the code and the parameters (``Text.code``, ``Text.params``, plain JSON) and, for search,
exports and the API, the English rendering; a reader renders the code in the language active at display time.
Renaming a message keeps its code, so rows written before still render; a code no catalogue knows (from a newer
version, rolled back) falls back to the stored English.

Parameters are shown as given, except those named in the catalogue's ``choices`` (a param holding a
``TextChoices`` value, such as a service status), which are shown as the choice's translated label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils import translation
from django.utils.functional import Promise


@dataclass(frozen=True)
class Text:
    """One message of a catalogue with its parameters; ``str()`` renders it in the active language."""

    catalogue: Texts
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.catalogue.render(self.code, self.params)

    def english(self) -> str:
        """The rendering stored next to the code: for search, exports, the API and a catalogue that lost the code."""
        with translation.override("en"):
            return str(self)


class Texts:
    """A catalogue of stored messages: ``code -> gettext_lazy(...)`` or ``ngettext_lazy(..., "n")``."""

    def __init__(
        self, messages: Mapping[str, Promise], *, choices: Mapping[str, type[models.TextChoices]] | None = None
    ) -> None:
        self.messages = dict(messages)
        self.choices = dict(choices or {})

    def __call__(self, code: str, **params: Any) -> Text:
        if code not in self.messages:
            raise KeyError(f"no stored message {code!r}")
        return Text(self, code, params)

    def render(self, code: str, params: Mapping[str, Any], fallback: str = "") -> str:
        """``code`` with ``params`` in the active language; ``fallback`` when the code is unknown or does not fit."""
        template = self.messages.get(code)
        if template is None:
            return fallback
        shown = dict(params)
        for name, choice in self.choices.items():
            if name in shown and shown[name] in choice.values:
                shown[name] = choice(shown[name]).label
        try:
            return str(template % shown)
        except (KeyError, TypeError, ValueError):  # parameters of an older version of the message
            return fallback or str(template)


def stored_text(value: str | Text) -> tuple[str, str, dict[str, Any]]:
    """``(english, code, params)`` to store for a message given as plain text or as a catalogue ``Text``."""
    if isinstance(value, Text):
        return value.english(), value.code, dict(value.params)
    return str(value), "", {}
