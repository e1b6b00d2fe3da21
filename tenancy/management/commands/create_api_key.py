"""``manage.py create_api_key --org NS --name N [--user EMAIL --manage]``: create an ``sk-`` key and print it once."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import User
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
        parser.add_argument(
            "--manage",
            action="store_true",
            help="also allow the /api management endpoints, as far as --user's role allows (needs --user)",
        )
        parser.add_argument("--user", help="e-mail of the member the key is created by (and acts as, with --manage)")

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
        manage: bool = False,
        user: str | None = None,
        **options: Any,
    ) -> None:
        organization = Organization.objects.filter(namespace=org).first()
        if organization is None:
            raise CommandError(f"No organization with namespace {org!r}.")
        creator = None
        if user is not None:
            creator = User.objects.filter(memberships__org=organization, email__iexact=user).first()
            if creator is None:
                raise CommandError(f"--user: {user!r} is not a member of {org!r}.")
        elif manage:
            raise CommandError("--manage needs --user: a management key acts with its creator's role.")
        cap = None
        if spend_cap is not None:
            try:
                cap = Decimal(spend_cap)
            except InvalidOperation:
                raise CommandError(f"--spend-cap: {spend_cap!r} is not a number.") from None
        try:
            _key, raw = apikey_create(
                org=organization,
                actor=creator,
                name=name,
                expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
                rpm_limit=rpm,
                tpm_limit=tpm,
                allowed_models=models,
                spend_cap=cap,
                spend_cap_period=spend_cap_period if cap is not None else "",
                manage=manage,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(raw)
