"""The role matrix (tenancy/permissions.py) holds in every tenant-owned write: services, console and /api.

Alice owns the org, Dana is its admin, Bob a plain member. The expectations are written out here, not read from the
map, so a change to the map shows up as a failing test.
"""

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from billing import services as billing
from billing.models import EntryKind, Subscription
from core.errors import PermissionDenied
from deployments.models import Service
from deployments.policy import ScalingPolicy
from deployments.services import (
    service_create,
    service_delete,
    service_scale,
    service_set_policy,
    service_start,
    service_stop,
)
from playground.services import conversation_delete, conversation_rename
from tenancy import services as tenancy
from tenancy.models import ApiKey, AuditEvent, Invitation, Membership, Role
from tests.deployments.helpers import qwen
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

MANAGERS_ONLY = {
    "service.create",
    "service.scale",
    "service.policy",
    "service.stop",
    "service.start",
    "service.delete",
    "apikey.create",
    "apikey.revoke",
    "member.invite",
    "invitation.revoke",
    "member.remove",
    "subscription.create",
    "subscription.add",
}
OWNER_ONLY = {"member.role", "subscription.auto_renew", "billing.topup"}
EVERYONE = {"playground.use"}
ROLES = {"owner": "alice", "admin": "dana", "member": "bob"}


def expected(role: str, action: str) -> str:
    if action in EVERYONE or role == "owner":
        return "ok"
    if role == "admin" and action in MANAGERS_ONLY:
        return "ok"
    return "denied"


@pytest.fixture
def world(org, alice, dana, bob, catalog, kube_cluster, region):
    """One of everything a write can touch, made by the platform (actor None) so no role is needed for it."""
    service = service_create(org=org, actor=None, catalog_model=qwen(), region=region, name="chat", instances=1)
    stopped = service_create(org=org, actor=None, catalog_model=qwen(), region=region, name="idle", instances=1)
    service_stop(service=stopped, actor=None)
    billing.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100000"), key="funds")
    monthly = service_create(org=org, actor=None, catalog_model=qwen(), region=region, name="monthly", instances=1)
    sub = billing.subscription_create(service=monthly, instances=1, actor=None)
    owner_key, _raw = tenancy.apikey_create(org=org, actor=alice, name="owner's")
    invitation, _url = tenancy.invitation_create(org=org, actor=None, email="zoe@example.com", role=Role.MEMBER)
    eve = UserFactory(email="eve@example.com")
    eve_membership = MembershipFactory(org=org, user=eve, role=Role.MEMBER)
    return {
        "org": org,
        "region": region,
        "service": service,
        "stopped": stopped,
        "sub": sub,
        "owner_key": owner_key,
        "invitation": invitation,
        "eve": eve_membership,
    }


def _conversation(world, actor):
    from playground.models import Conversation

    return Conversation.objects.create(org=world["org"], user=actor, title="t", model_id="public/x")


OPERATIONS = {
    "service.create": lambda w, a: service_create(
        org=w["org"], actor=a, catalog_model=qwen(), region=w["region"], name="new", instances=1
    ),
    "service.scale": lambda w, a: service_scale(service=w["service"], actor=a, instances=2),
    "service.policy": lambda w, a: service_set_policy(
        service=w["service"],
        actor=a,
        policy=ScalingPolicy(scaling_mode="autoscale", min_instances=0, max_instances=3),
    ),
    "service.stop": lambda w, a: service_stop(service=w["service"], actor=a),
    "service.start": lambda w, a: service_start(service=w["stopped"], actor=a),
    "service.delete": lambda w, a: service_delete(service=w["service"], actor=a),
    "apikey.create": lambda w, a: tenancy.apikey_create(org=w["org"], actor=a, name="mine"),
    "apikey.revoke": lambda w, a: tenancy.apikey_revoke(key=w["owner_key"], actor=a),
    "member.invite": lambda w, a: tenancy.invitation_create(
        org=w["org"], actor=a, email="yan@example.com", role=Role.MEMBER
    ),
    "invitation.revoke": lambda w, a: tenancy.invitation_revoke(invitation=w["invitation"], actor=a),
    "member.role": lambda w, a: tenancy.membership_set_role(membership=w["eve"], actor=a, role=Role.ADMIN),
    "member.remove": lambda w, a: tenancy.membership_remove(membership=w["eve"], actor=a),
    "subscription.create": lambda w, a: billing.subscription_create(service=w["service"], instances=1, actor=a),
    "subscription.add": lambda w, a: billing.subscription_add_instances(subscription=w["sub"], instances=1, actor=a),
    "subscription.auto_renew": lambda w, a: billing.subscription_set_auto_renew(
        subscription=w["sub"], auto_renew=False, actor=a
    ),
    # An amount below the minimum: the role is checked first, so an allowed actor gets the amount's error and
    # no Stripe call is made.
    "billing.topup": lambda w, a: billing.topup_create(org=w["org"], amount=Decimal("0"), actor=a),
    "playground.use": lambda w, a: conversation_rename(conversation=_conversation(w, a), actor=a, title="renamed"),
}


def _outcome(operation, world, actor) -> str:
    try:
        operation(world, actor)
    except PermissionDenied:
        return "denied"
    except Exception as exc:  # noqa: BLE001 - only billing.topup reaches its own validation error here
        assert getattr(exc, "field", None) == "amount", exc
    return "ok"


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("action", list(OPERATIONS))
def test_every_tenant_write_follows_the_role_matrix(request, world, role, action):
    actor = request.getfixturevalue(ROLES[role])
    assert _outcome(OPERATIONS[action], world, actor) == expected(role, action)


def test_the_map_names_exactly_the_tested_actions():
    from tenancy.permissions import PERMISSIONS

    assert set(PERMISSIONS) == set(OPERATIONS) == MANAGERS_ONLY | OWNER_ONLY | EVERYONE


def test_a_denied_write_changes_nothing(world, bob):
    with pytest.raises(PermissionDenied):
        service_stop(service=world["service"], actor=bob)
    with pytest.raises(PermissionDenied):
        tenancy.apikey_revoke(key=world["owner_key"], actor=bob)
    with pytest.raises(PermissionDenied):
        billing.subscription_set_auto_renew(subscription=world["sub"], auto_renew=False, actor=bob)
    assert Service.objects.get(pk=world["service"].pk).desired_running
    assert ApiKey.objects.get(pk=world["owner_key"].pk).revoked_at is None
    assert Subscription.objects.get(pk=world["sub"].pk).auto_renew


def test_only_the_member_who_started_a_conversation_may_change_it(world, alice, bob):
    mine = _conversation(world, bob)
    with pytest.raises(PermissionDenied):
        conversation_delete(conversation=mine, actor=alice)
    conversation_delete(conversation=mine, actor=bob)


def test_anyone_may_leave_but_admins_cannot_remove_owners(world, alice, dana, bob):
    with pytest.raises(PermissionDenied):
        tenancy.membership_remove(membership=Membership.objects.get(user=alice), actor=dana)
    tenancy.membership_remove(membership=Membership.objects.get(user=bob), actor=bob)
    assert not Membership.objects.filter(user=bob).exists()


MANAGERS = [("alice_client", True), ("dana_client", True), ("bob_client", False)]
OWNERS = [("alice_client", True), ("dana_client", False), ("bob_client", False)]

# --- the console ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("client_name", "status"), [("alice_client", 302), ("dana_client", 302), ("bob_client", 403)])
def test_console_key_revoke_follows_the_matrix(request, world, client_name, status):
    client = request.getfixturevalue(client_name)
    assert client.post(reverse("apikey-revoke", args=[world["owner_key"].pk])).status_code == status
    revoked = ApiKey.objects.get(pk=world["owner_key"].pk).revoked_at is not None
    assert revoked is (status == 302)


@pytest.mark.parametrize(
    ("client_name", "allowed"), [("alice_client", True), ("dana_client", True), ("bob_client", False)]
)
def test_console_service_writes_follow_the_matrix(request, world, client_name, allowed):
    client = request.getfixturevalue(client_name)
    service = world["service"]
    client.post(reverse("deployments:service-scale", args=[service.pk]), {"instances": 2, "confirmed": "1"})
    client.post(reverse("deployments:service-stop", args=[service.pk]))
    response = client.post(reverse("deployments:service-delete", args=[service.pk]))
    assert response.status_code == (302 if allowed else 403)
    service.refresh_from_db()
    assert (service.instances, service.desired_running, service.status == "Deleting") == (
        (2, False, True) if allowed else (1, True, False)
    )


@pytest.mark.parametrize(
    ("client_name", "allowed"), [("alice_client", True), ("dana_client", True), ("bob_client", False)]
)
def test_console_key_creation_follows_the_matrix(request, world, client_name, allowed):
    client = request.getfixturevalue(client_name)
    page = client.get(reverse("apikeys")).content.decode()
    assert ('name="manage"' in page) is allowed  # the form (with its scope field) only for those who may
    client.post(reverse("apikeys"), {"name": "console", "manage": "on"})
    created = ApiKey.objects.filter(name="console").first()
    assert (created is not None) is allowed
    if allowed:
        assert created.scopes == ["inference", "manage"]


@pytest.mark.parametrize(
    ("client_name", "allowed"), [("alice_client", True), ("dana_client", False), ("bob_client", False)]
)
def test_console_auto_renew_and_roles_are_the_owners(request, world, client_name, allowed):
    client = request.getfixturevalue(client_name)
    sub = world["sub"]
    client.post(reverse("billing:subscription-detail", args=[sub.pk]), {"action": "auto_renew"})
    client.post(reverse("member-role", args=[world["eve"].pk]), {"role": Role.ADMIN})
    assert Subscription.objects.get(pk=sub.pk).auto_renew is not allowed
    assert (Membership.objects.get(pk=world["eve"].pk).role == Role.ADMIN) is allowed


def test_members_page_shows_the_matrix_in_both_languages(bob_client):
    english = bob_client.get(reverse("org-members")).content.decode()
    assert "Who may do what" in english and "Change members&#x27; roles" in english
    chinese = bob_client.get(reverse("org-members"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "谁可以做什么" in chinese


# --- the management API and its keys --------------------------------------------------------------------------


def _api(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def _create(client):
    body = {"name": "api-qwen", "model": "qwen2.5-7b-instruct", "region": "cn-shanghai-2", "instances": 1}
    return client.post("/api/services/", body, format="json")


@pytest.mark.parametrize(
    ("creator", "manage", "status"),
    [
        ("alice", True, 201),
        ("dana", True, 201),
        ("alice", False, 403),
        ("bob", True, 403),
    ],
)
def test_api_deploy_needs_a_manage_key_of_a_manager(request, world, alice, creator, manage, status):
    # Bob may not create keys himself: the owner made his; the key still acts with Bob's role, never more.
    user = request.getfixturevalue(creator)
    key, raw = tenancy.apikey_create(org=world["org"], actor=None, name="k", manage=manage)
    ApiKey.objects.filter(pk=key.pk).update(created_by=user)
    response = _create(_api(raw))
    assert response.status_code == status, response.content
    assert Service.objects.filter(name="api-qwen").exists() is (status == 201)
    if status == 403:
        assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize("manage", [False, True])
def test_member_key_cannot_stop_scale_or_delete(world, bob, manage):
    key, raw = tenancy.apikey_create(org=world["org"], actor=None, name="bob's", manage=manage)
    ApiKey.objects.filter(pk=key.pk).update(created_by=bob)
    api, sid = _api(raw), world["service"].pk
    assert api.get(f"/api/services/{sid}/").status_code == 200  # reading is anyone's
    assert api.post(f"/api/services/{sid}/stop/").status_code == 403
    assert api.post(f"/api/services/{sid}/scale/", {"instances": 3}, format="json").status_code == 403
    assert api.delete(f"/api/services/{sid}/").status_code == 403
    assert Service.objects.get(pk=sid).desired_running


def test_a_key_whose_creator_left_can_do_nothing(world, dana):
    key, raw = tenancy.apikey_create(org=world["org"], actor=dana, name="dana's", manage=True)
    Membership.objects.filter(user=dana).delete()
    assert _api(raw).post(f"/api/services/{world['service'].pk}/stop/").status_code == 403


def test_audit_names_the_key_that_acted(world, alice):
    key, raw = tenancy.apikey_create(org=world["org"], actor=alice, name="ci", manage=True)
    assert _api(raw).post(f"/api/services/{world['service'].pk}/stop/").status_code == 200
    event = AuditEvent.objects.get(action="service.stop", target_id=str(world["service"].pk))
    assert (event.api_key, event.actor) == (key, None)


def test_session_writes_still_name_the_user(world, alice_client, alice):
    assert alice_client.post(f"/api/services/{world['service'].pk}/stop/").status_code == 200
    event = AuditEvent.objects.get(action="service.stop", target_id=str(world["service"].pk))
    assert (event.actor, event.api_key) == (alice, None)


def test_invitation_left_pending_by_denied_revoke(world, bob):
    with pytest.raises(PermissionDenied):
        tenancy.invitation_revoke(invitation=world["invitation"], actor=bob)
    assert Invitation.objects.get(pk=world["invitation"].pk).pending


def test_create_api_key_command_makes_a_manage_key_only_for_a_member(org, alice, bob):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--manage needs --user"):
        call_command("create_api_key", org="acme", name="ops", manage=True)
    with pytest.raises(CommandError, match="Your role"):
        call_command("create_api_key", org="acme", name="ops", manage=True, user="bob@example.com")
    call_command("create_api_key", org="acme", name="ops", manage=True, user="alice@example.com")
    call_command("create_api_key", org="acme", name="ci")
    assert dict(ApiKey.objects.values_list("name", "scopes")) == {"ops": ["inference", "manage"], "ci": ["inference"]}
    assert ApiKey.objects.get(name="ops").created_by == alice
