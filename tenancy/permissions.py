"""Who may do what in an organization: the one permission map, checked by every tenant-owned write service.

Every write service in tenancy/, deployments/, billing/ and playground/ that changes something an organization owns
calls ``require(actor, org, action)`` before it changes anything; views and templates read the same map
(``allowed``) only to hide buttons, never as the check. The matrix (✓ allowed):

=========================  =====  =====  ======
action                     owner  admin  member
=========================  =====  =====  ======
playground.use             ✓      ✓      ✓       chat, rename and delete one's own conversations
service.create             ✓      ✓              deploy a billed dedicated service
service.scale              ✓      ✓
service.policy             ✓      ✓              autoscaling bounds, target and windows
service.start              ✓      ✓
service.stop               ✓      ✓
service.delete             ✓      ✓
apikey.create              ✓      ✓
apikey.revoke              ✓      ✓
member.invite              ✓      ✓              only owners invite owners (tenancy.services)
member.remove              ✓      ✓              only owners remove owners; anyone may leave
invitation.revoke          ✓      ✓
member.role                ✓                     change a member's role
subscription.create        ✓      ✓              commit to a month of a service (also when deploying one)
subscription.add           ✓      ✓              add instances to a subscription
subscription.auto_renew    ✓                     a billing setting
billing.topup              ✓                     pay money into the account
=========================  =====  =====  ======

Reading pages, inference through ``/v1`` and the playground need no more than membership.

Platform actions are no organization's role: crediting an organization's balance, GPU quotas, the scaling policies
of the platform's own public services, clusters, the ingestion dead letters are for platform staff
(``User.is_staff``); their services call ``require_platform_staff(actor)``.

The actor is a ``User`` (its membership's role counts), an ``ApiKeyUser`` (a request made with an ``sk-`` key:
allowed only when the key has the ``manage`` scope, and then only what its creator's current role allows, never
more; a key whose creator left the organization may do nothing), or None: the platform itself (Celery tasks,
enforcement, management commands), which is always allowed. Refusals raise ``core.errors.PermissionDenied``: a 403
in DRF's JSON on /api, Django's 403 page or the form's error in the console.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.errors import PermissionDenied
from tenancy.models import ApiKey, ApiKeyScope, Membership, Organization, Role

_OWNER = frozenset({Role.OWNER})
_MANAGERS = frozenset({Role.OWNER, Role.ADMIN})
_EVERYONE = frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER})

PERMISSIONS: dict[str, frozenset[str]] = {
    "playground.use": _EVERYONE,
    "service.create": _MANAGERS,
    "service.scale": _MANAGERS,
    "service.policy": _MANAGERS,
    "service.start": _MANAGERS,
    "service.stop": _MANAGERS,
    "service.delete": _MANAGERS,
    "apikey.create": _MANAGERS,
    "apikey.revoke": _MANAGERS,
    "member.invite": _MANAGERS,
    "member.remove": _MANAGERS,
    "invitation.revoke": _MANAGERS,
    "member.role": _OWNER,
    "subscription.create": _MANAGERS,
    "subscription.add": _MANAGERS,
    "subscription.auto_renew": _OWNER,
    "billing.topup": _OWNER,
}

# What the members page shows, in this order (the action ids above stay out of the user's sight).
LABELS: dict[str, Any] = {
    "playground.use": gettext_lazy("Use the playground and the API (/v1)"),
    "service.create": gettext_lazy("Deploy services"),
    "service.scale": gettext_lazy("Scale, stop, start and delete services"),
    "service.policy": gettext_lazy("Set services' autoscaling policies"),
    "apikey.create": gettext_lazy("Create and revoke API keys"),
    "member.invite": gettext_lazy("Invite and remove members"),
    "member.role": gettext_lazy("Change members' roles"),
    "subscription.create": gettext_lazy("Start subscriptions and add instances"),
    "subscription.auto_renew": gettext_lazy("Change subscription renewal"),
    "billing.topup": gettext_lazy("Top up the balance"),
}


def role_of(actor: Any, org: Organization) -> str | None:
    """The role ``actor`` acts with in ``org``; None when it has none (an outsider, or a key without ``manage``)."""
    key = getattr(actor, "key", None)
    if isinstance(key, ApiKey):
        if key.org_id != org.pk or ApiKeyScope.MANAGE not in key.scopes:
            return None
        user_id = key.created_by_id
    else:
        user_id = getattr(actor, "pk", None)
    if user_id is None:
        return None
    return Membership.objects.for_org(org).filter(user_id=user_id).values_list("role", flat=True).first()


def allowed(role: str | None, action: str) -> bool:
    return role in PERMISSIONS[action]


def require(actor: Any, org: Organization, action: str) -> None:
    """Raise PermissionDenied unless ``actor`` may do ``action`` in ``org`` (None, the platform, always may)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}")
    if actor is None:
        return
    if not allowed(role_of(actor, org), action):
        if isinstance(getattr(actor, "key", None), ApiKey) and ApiKeyScope.MANAGE not in actor.key.scopes:
            raise PermissionDenied(_("This API key may only call models (/v1); give it the manage scope."))
        raise PermissionDenied(_("Your role in this organization does not allow this."))


def require_platform_staff(actor: Any) -> None:
    """Raise PermissionDenied unless ``actor`` is platform staff (None, the platform itself, always is)."""
    if actor is None:
        return
    if getattr(actor, "key", None) is not None or not getattr(actor, "is_staff", False):
        raise PermissionDenied(_("Only a platform administrator may do this."))


def matrix() -> list[dict[str, Any]]:
    """Rows for the members page: a label and, per role, whether it may."""
    return [
        {"label": label, "roles": [(value, allowed(value, action)) for value, _name in Role.choices]}
        for action, label in LABELS.items()
    ]
