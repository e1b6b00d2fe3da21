"""Environment parsing that fails loudly: a bad value raises ImproperlyConfigured naming the variable.

Every variable can also be read from a file named by ``<NAME>_FILE`` (Docker/Kubernetes secrets). ``fallbacks``
lets a settings module that builds on another (the test settings) supply values for unset variables without
writing them into ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_UNSET: Any = object()
_fallbacks: dict[str, str] = {}


@contextmanager
def fallbacks(**values: str) -> Iterator[None]:
    """Within the block, an unset variable named here reads as the given value instead of its default."""
    saved = dict(_fallbacks)
    _fallbacks.update(values)
    try:
        yield
    finally:
        _fallbacks.clear()
        _fallbacks.update(saved)


def raw(name: str, default: Any = _UNSET) -> Any:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            with open(file_name, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from exc
    value = os.environ.get(name) or _fallbacks.get(name)
    if value is None or value == "":
        if default is _UNSET:
            raise ImproperlyConfigured(f"{name} must be set")
        return default
    return value


def string(name: str, default: Any = _UNSET) -> Any:
    return raw(name, default)


def boolean(name: str, default: bool) -> bool:
    value = raw(name, None)
    if value is None:
        return default
    lowered = str(value).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}: expected a boolean (true/false), got {value!r}")


def integer(name: str, default: int, *, minimum: int | None = None) -> int:
    value = raw(name, None)
    if value is None:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {value!r}") from None
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name}: must be >= {minimum}, got {parsed}")
    return parsed


def decimal(name: str, default: str) -> Decimal:
    value = raw(name, default)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}: expected a decimal number, got {value!r}") from None


def listing(name: str, default: list[str]) -> list[str]:
    value = raw(name, None)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = str(raw(name, default)).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value
