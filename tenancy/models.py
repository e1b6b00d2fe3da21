"""Tenancy core: organizations, memberships, invitations, API keys and the audit trail."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.querysets import OrgScopedQuerySet

namespace_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$",
    _("Lowercase letters, digits and hyphens; 1–40 characters; must start and end with a letter or digit."),
)


def new_personal_namespace() -> str:
    return f"u-{secrets.token_hex(6)}"


class Organization(models.Model):
    """The tenant: owns services, keys, conversations, usage and a billing account."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=100)
    namespace = models.CharField(_("namespace"), max_length=40, unique=True, validators=[namespace_validator])
    personal = models.BooleanField(default=False, verbose_name=_("personal"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("organization")
        verbose_name_plural = _("organizations")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.namespace})"


class UserProfile(models.Model):
    """A person's own settings, whichever organization they act for."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    # An IANA zone name (zoneinfo); empty: the platform's default (settings.TIME_ZONE).
    time_zone = models.CharField(_("time zone"), max_length=64, blank=True)

    class Meta:
        verbose_name = _("user profile")
        verbose_name_plural = _("user profiles")

    def __str__(self) -> str:
        return f"{self.user} ({self.time_zone or 'default'})"


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    ADMIN = "admin", _("Admin")
    MEMBER = "member", _("Member")


class Membership(models.Model):
    org = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships", verbose_name=_("organization")
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships", verbose_name=_("user")
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER, verbose_name=_("role"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    # When the user last chose this organization in the console: a new session starts in the latest one.
    chosen_at = models.DateTimeField(null=True, blank=True, verbose_name=_("chosen at"))

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="membership_unique_org_user")]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.user} in {self.org.namespace} as {self.role}"

    @property
    def can_manage(self) -> bool:
        return self.role in (Role.OWNER, Role.ADMIN)


class Invitation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations", verbose_name=_("organization")
    )
    email = models.EmailField(verbose_name=_("e-mail"))
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER, verbose_name=_("role"))
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True, verbose_name=_("accepted at"))
    revoked_at = models.DateTimeField(null=True, blank=True, verbose_name=_("revoked at"))

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("invitation")
        verbose_name_plural = _("invitations")
        ordering = ["-created_at"]

    @property
    def pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class SpendPeriod(models.TextChoices):
    DAILY = "daily", _("Daily")
    MONTHLY = "monthly", _("Monthly")


API_KEY_PREFIX = "sk-"


class ApiKeyScope(models.TextChoices):
    INFERENCE = "inference", _("Inference (/v1)")
    MANAGE = "manage", _("Management API (/api)")


def default_scopes() -> list[str]:
    return [ApiKeyScope.INFERENCE.value]


def hash_api_key(raw: str) -> str:
    """Keys carry 240+ bits of randomness, so a fast hash is safe and keeps lookups O(1)."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    """An ``sk-`` key: stored only as a hash plus a visible prefix, shown once at creation."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys", verbose_name=_("organization")
    )
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16, verbose_name=_("prefix"))
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, verbose_name=_("revoked at"))
    last_used_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last used at"))
    rpm_limit = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(_("tokens per minute"), null=True, blank=True)
    # Model ids this key may call (``public/<slug>`` or ``<namespace>/<service>``); empty means all the org may call.
    allowed_models = models.JSONField(default=list, blank=True)
    spend_cap = models.DecimalField(_("spend cap"), max_digits=18, decimal_places=6, null=True, blank=True)
    spend_cap_period = models.CharField(max_length=10, choices=SpendPeriod.choices, blank=True)
    # Every key may call /v1; "manage" adds the /api management endpoints, within its creator's role.
    scopes = models.JSONField(default=default_scopes, blank=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…"

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class AuditEvent(models.Model):
    """Who changed what: one row for every change a user or admin makes."""

    org = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="audit_events",
        verbose_name=_("organization"),
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    # Set when the change was made with an API key (``actor`` is then empty: the key, not its creator, acted).
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    action = models.CharField(max_length=64, verbose_name=_("action"))
    target_type = models.CharField(max_length=64, blank=True, verbose_name=_("target type"))
    target_id = models.CharField(max_length=64, blank=True, verbose_name=_("target ID"))
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("created at"))

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["org", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"
