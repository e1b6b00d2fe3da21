"""Writes for the tenancy core: sign-up, organizations, memberships, invitations, API keys, audit."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from core.errors import ApplicationError, PermissionDenied
from tenancy.models import (
    API_KEY_PREFIX,
    ApiKey,
    ApiKeyScope,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    Role,
    SpendPeriod,
    UserProfile,
    hash_api_key,
    new_personal_namespace,
)
from tenancy.permissions import require, role_of
from tenancy.selectors import time_zone_names


def audit_record(
    *,
    org: Organization | None,
    actor: User | None,
    action: str,
    target: Model | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """One audit row; a change made with an API key names the key (``api_key``), not a user."""
    key = getattr(actor, "key", None)
    return AuditEvent.objects.create(
        org=org,
        actor=actor if getattr(actor, "pk", None) else None,
        api_key=key if isinstance(key, ApiKey) else None,
        action=action,
        target_type=(target._meta.model_name or "") if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        data=data or {},
    )


@transaction.atomic
def profile_set_time_zone(*, user: User, time_zone: str) -> UserProfile:
    """Show ``user`` times in ``time_zone`` (an IANA name; empty: the platform's default), audited."""
    time_zone = (time_zone or "").strip()
    if time_zone and time_zone not in time_zone_names():
        raise ApplicationError(_("Unknown time zone “%(zone)s”.") % {"zone": time_zone[:64]}, field="time_zone")
    with transaction.atomic():
        profile, _created = UserProfile.objects.select_for_update().get_or_create(user=user)
        if profile.time_zone != time_zone:
            before, profile.time_zone = profile.time_zone, time_zone
            profile.save(update_fields=["time_zone"])
            audit_record(
                org=None, actor=user, action="user.time_zone", target=profile, data={"from": before, "to": time_zone}
            )
    return profile


def user_signup(*, email: str, password: str, name: str = "") -> User:
    """Create a user with a personal organization they own."""
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(username=email).exists():
        raise ApplicationError(_("An account with this e-mail already exists."), field="email")
    user = User.objects.create_user(username=email, email=email, password=password, first_name=name[:150])
    org_create(owner=user, name=name or email.split("@")[0], personal=True)
    return user


def _unused_personal_namespace() -> str:
    while True:
        namespace = new_personal_namespace()
        if not Organization.objects.filter(namespace=namespace).exists():
            return namespace


@transaction.atomic
def membership_choose(*, user: User, org_id: Any) -> Membership | None:
    """Make ``org_id`` the organization ``user``'s next log-in starts in; None when the user is not a member.

    The console's switcher, a new organization and an accepted invitation choose; the current session holds the
    choice itself (``SESSION_ORG_KEY``), this remembers it for the sessions to come.
    """
    membership = Membership.objects.filter(user=user, org_id=org_id).select_related("org").first()
    if membership is not None:
        membership.chosen_at = timezone.now()
        membership.save(update_fields=["chosen_at"])
    return membership


def org_create(*, owner: User, name: str, namespace: str | None = None, personal: bool = False) -> Organization:
    name = name.strip()
    if not name:
        raise ApplicationError(_("An organization needs a name."), field="name")
    namespace = (namespace or "").strip().lower() or _unused_personal_namespace()
    org = Organization(name=name[:100], namespace=namespace, personal=personal)
    try:
        org.full_clean(validate_unique=False)
    except ValidationError as exc:
        field, errors = next(iter(exc.message_dict.items()))
        raise ApplicationError(errors[0], field=field) from None
    try:
        with transaction.atomic():
            org.save()
    except IntegrityError:
        raise ApplicationError(_("The namespace “%(ns)s” is taken.") % {"ns": namespace}, field="namespace") from None
    Membership.objects.create(org=org, user=owner, role=Role.OWNER)
    audit_record(org=org, actor=owner, action="org.create", target=org, data={"namespace": namespace})
    return org


def _invite_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def invitation_create(*, org: Organization, actor: User, email: str, role: str) -> tuple[Invitation, str]:
    """Invite someone by e-mail; returns the invitation and the accept URL (also e-mailed)."""
    require(actor, org, "member.invite")
    email = User.objects.normalize_email(email).strip().lower()
    if role not in Role.values:
        raise ApplicationError(_("Unknown role."), field="role")
    if role == Role.OWNER and actor is not None and role_of(actor, org) != Role.OWNER:
        raise PermissionDenied(_("Only owners can invite owners."), field="role")
    if Membership.objects.for_org(org).filter(user__email__iexact=email).exists():
        raise ApplicationError(_("%(email)s is already a member.") % {"email": email}, field="email")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        org=org,
        email=email,
        role=role,
        token_hash=_invite_token_hash(token),
        invited_by=actor,
        expires_at=timezone.now() + timedelta(days=7),
    )
    url = settings.SITE_URL + reverse("invitation-accept", args=[token])
    audit_record(
        org=org, actor=actor, action="invitation.create", target=invitation, data={"email": email, "role": role}
    )
    transaction.on_commit(
        lambda: send_mail(
            _("You are invited to %(org)s") % {"org": org.name},
            _("%(who)s invited you to join %(org)s as %(role)s.\n\nAccept: %(url)s\n\nThe link expires in 7 days.")
            % {"who": actor.email or actor.username, "org": org.name, "role": role, "url": url},
            None,
            [email],
            fail_silently=True,
        )
    )
    return invitation, url


def invitation_for_token(token: str) -> Invitation | None:
    return Invitation.objects.select_related("org").filter(token_hash=_invite_token_hash(token)).first()


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    invitation = Invitation.objects.select_for_update().filter(token_hash=_invite_token_hash(token)).first()
    if invitation is None or not invitation.pending:
        raise ApplicationError(_("This invitation is invalid, expired or already used."), code="invalid_invitation")
    if (user.email or "").lower() != invitation.email:
        raise ApplicationError(
            _("This invitation was sent to %(email)s; log in with that address to accept it.")
            % {"email": invitation.email},
            code="wrong_user",
            status=403,
        )
    membership, _created = Membership.objects.get_or_create(
        org=invitation.org, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit_record(org=invitation.org, actor=user, action="invitation.accept", target=invitation)
    return membership


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: User | None) -> None:
    require(actor, invitation.org, "invitation.revoke")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(org=invitation.org, actor=actor, action="invitation.revoke", target=invitation)


@transaction.atomic
def membership_set_role(*, membership: Membership, actor: User | None, role: str) -> Membership:
    require(actor, membership.org, "member.role")
    if role not in Role.values:
        raise ApplicationError(_("Unknown role."), field="role")
    _keep_an_owner(membership, new_role=role)
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(org=membership.org, actor=actor, action="membership.role", target=membership, data={"role": role})
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User) -> None:
    if membership.user_id != getattr(actor, "pk", None):
        require(actor, membership.org, "member.remove")
        if membership.role == Role.OWNER and actor is not None and role_of(actor, membership.org) != Role.OWNER:
            raise PermissionDenied(_("Only owners can remove owners."))
    _keep_an_owner(membership, new_role=None)
    audit_record(
        org=membership.org,
        actor=actor,
        action="membership.remove",
        target=membership,
        data={"user": membership.user.username},
    )
    membership.delete()


def _keep_an_owner(membership: Membership, *, new_role: str | None) -> None:
    if membership.role == Role.OWNER and new_role != Role.OWNER:
        owners = Membership.objects.select_for_update().for_org(membership.org).filter(role=Role.OWNER)
        if owners.count() <= 1:
            raise ApplicationError(_("An organization must keep at least one owner."), code="last_owner")


# --- API keys ----------------------------------------------------------------------------------------------------


def _generate_api_key() -> str:
    # 40 URL-safe characters of randomness after the prefix (token_urlsafe(30) yields exactly 40).
    return API_KEY_PREFIX + secrets.token_urlsafe(30)


def _user_behind(actor: Any) -> User | None:
    """The user an actor stands for: a key made with a key belongs to that key's creator, never to more."""
    if isinstance(getattr(actor, "key", None), ApiKey):
        creator: User | None = actor.key.created_by
        return creator
    return actor if getattr(actor, "pk", None) else None


@transaction.atomic
def apikey_create(
    *,
    org: Organization,
    actor: User | None = None,
    name: str,
    expires_at: datetime | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    allowed_models: list[str] | None = None,
    spend_cap: Decimal | None = None,
    spend_cap_period: str = "",
    manage: bool = False,
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored.

    Every key may call /v1; ``manage`` also opens the /api management endpoints, as far as the creator's role goes.
    """
    require(actor, org, "apikey.create")
    name = (name or "").strip()
    if not name:
        raise ApplicationError(_("Give the key a name."), field="name")
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError(_("The expiry must be in the future."), field="expires_at")
    for field, value in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit)):
        if value is not None and value <= 0:
            raise ApplicationError(_("Limits must be positive."), field=field)
    if spend_cap is not None:
        if spend_cap <= 0:
            raise ApplicationError(_("The spend cap must be positive."), field="spend_cap")
        if spend_cap_period not in SpendPeriod.values:
            raise ApplicationError(_("Choose a reset period for the spend cap."), field="spend_cap_period")
    models = sorted({m.strip() for m in (allowed_models or []) if m and m.strip()})
    raw = _generate_api_key()
    key = ApiKey.objects.create(
        org=org,
        name=name[:100],
        prefix=raw[:10],
        key_hash=hash_api_key(raw),
        created_by=_user_behind(actor),
        expires_at=expires_at,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        allowed_models=models,
        spend_cap=spend_cap,
        spend_cap_period=spend_cap_period if spend_cap is not None else "",
        scopes=[ApiKeyScope.INFERENCE.value] + ([ApiKeyScope.MANAGE.value] if manage else []),
    )
    audit_record(
        org=org,
        actor=actor,
        action="apikey.create",
        target=key,
        data={"name": key.name, "prefix": key.prefix, "scopes": key.scopes},
    )
    return key, raw


@transaction.atomic
def apikey_revoke(*, key: ApiKey, actor: User | None = None) -> ApiKey:
    require(actor, key.org, "apikey.revoke")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(org=key.org, actor=actor, action="apikey.revoke", target=key)
        from core import signals

        transaction.on_commit(lambda: signals.apikey_revoked.send(sender=ApiKey, key_hash=key.key_hash))
    return key
