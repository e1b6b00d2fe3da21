"""Tenant walls: every tenant-owned URL answers 404 to an outsider, and nothing changes."""

import pytest
from django.urls import reverse

from tenancy.api import OrgScopedViewSetMixin
from tenancy.models import ApiKey, Invitation, Membership
from tenancy.services import apikey_create, invitation_create


@pytest.fixture
def alice_key(org, alice):
    key, _raw = apikey_create(org=org, actor=alice, name="prod")
    return key


@pytest.fixture
def pending_invitation(org, alice):
    invitation, _url = invitation_create(org=org, actor=alice, email="zoe@example.com", role="member")
    return invitation


@pytest.mark.django_db
def test_outsider_gets_404_on_every_tenant_owned_url(charlie_client, alice_key, pending_invitation, bob, org):
    bob_membership = Membership.objects.get(org=org, user=bob)
    urls = [
        reverse("apikey-revoke", args=[alice_key.pk]),
        reverse("member-role", args=[bob_membership.pk]),
        reverse("member-remove", args=[bob_membership.pk]),
        reverse("invitation-revoke", args=[pending_invitation.pk]),
    ]
    for url in urls:
        assert charlie_client.post(url, {"role": "owner"}).status_code == 404, url
    alice_key.refresh_from_db()
    assert alice_key.revoked_at is None
    assert Membership.objects.filter(pk=bob_membership.pk, role="member").exists()
    assert Invitation.objects.get(pk=pending_invitation.pk).revoked_at is None


@pytest.mark.django_db
def test_admin_of_the_org_can_revoke_its_keys(dana_client, alice_key):
    assert dana_client.post(reverse("apikey-revoke", args=[alice_key.pk])).status_code == 302
    alice_key.refresh_from_db()
    assert alice_key.revoked_at is not None


@pytest.mark.django_db
def test_lists_show_only_the_current_orgs_rows(charlie_client, alice_client, alice_key, django_assert_max_num_queries):
    assert alice_key.prefix in alice_client.get(reverse("apikeys")).content.decode()
    with django_assert_max_num_queries(10):
        page = charlie_client.get(reverse("apikeys")).content.decode()
    assert alice_key.prefix not in page and "prod" not in page


@pytest.mark.django_db
def test_for_org_with_no_org_is_empty(alice_key):
    assert ApiKey.objects.for_org(None).count() == 0


def test_viewsets_cannot_override_get_queryset():
    with pytest.raises(TypeError, match="must not override get_queryset"):

        class Leaky(OrgScopedViewSetMixin):  # noqa: F841
            def get_queryset(self):
                return ApiKey.objects.all()
