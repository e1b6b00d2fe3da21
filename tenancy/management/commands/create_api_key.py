"""``python manage.py create_api_key --org NS --name N``: create an ``sk-`` key for scripts and print it once."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.errors import ApplicationError
from tenancy.models import Organization
from tenancy.services import apikey_create


class Command(BaseCommand):
    help = "Create an API key for an organization and print it (it is shown only this once)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", required=True, help="namespace of the organization")
        parser.add_argument("--name", required=True, help="name of the key")
        parser.add_argument("--expires-days", type=int, help="expire after this many days")
        parser.add_argument("--rpm", type=int, help="requests per minute limit")
        parser.add_argument("--tpm", type=int, help="tokens per minute limit")
        parser.add_argument(
            "--model",
            action="append",
            default=[],
            dest="models",
            help="allowed model id (repeat for several; default: all the org may call)",
        )
        parser.add_argument("--spend-cap", help="spend cap in the platform currency")
        parser.add_argument("--spend-cap-period", default="monthly", choices=["daily", "monthly"])

    def handle(
        self,
        *args: Any,
        org: str,
        name: str,
        expires_days: int | None,
        rpm: int | None,
        tpm: int | None,
        models: list[str],
        spend_cap: str | None,
        spend_cap_period: str,
        **options: Any,
    ) -> None:
        organization = Organization.objects.filter(namespace=org).first()
        if organization is None:
            raise CommandError(f"No organization with namespace {org!r}.")
        cap = None
        if spend_cap is not None:
            try:
                cap = Decimal(spend_cap)
            except InvalidOperation:
                raise CommandError(f"--spend-cap: {spend_cap!r} is not a number.") from None
        try:
            _key, raw = apikey_create(
                org=organization,
                name=name,
                expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
                rpm_limit=rpm,
                tpm_limit=tpm,
                allowed_models=models,
                spend_cap=cap,
                spend_cap_period=spend_cap_period if cap is not None else "",
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(raw)
