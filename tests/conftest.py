"""Shared fixtures: three actors everywhere — Alice owns the org, Bob is a member, Charlie is an outsider.

Dana is the org's admin, for the permission matrix (tenancy/permissions.py).
"""

import pytest
from django.core.management import call_command

from deployments.models import PUBLIC_NAMESPACE
from tenancy.models import Role
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

PASSWORD = "correct-horse-battery"


@pytest.fixture
def org(db):
    return OrganizationFactory(name="Acme AI", namespace="acme")


@pytest.fixture
def alice(org):
    user = UserFactory(email="alice@example.com")
    MembershipFactory(org=org, user=user, role=Role.OWNER)
    return user


@pytest.fixture
def bob(org):
    user = UserFactory(email="bob@example.com")
    MembershipFactory(org=org, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def dana(org):
    user = UserFactory(email="dana@example.com")
    MembershipFactory(org=org, user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def public_org(db):
    """The platform's own organization: its services are the public models (``public/<slug>``)."""
    return OrganizationFactory(name="Platform", namespace=PUBLIC_NAMESPACE)


@pytest.fixture
def other_org(db):
    return OrganizationFactory(name="Rival Labs", namespace="rival")


@pytest.fixture
def charlie(other_org):
    user = UserFactory(email="charlie@example.com")
    MembershipFactory(org=other_org, user=user, role=Role.OWNER)
    return user


def _client_for(client_class, user):
    c = client_class()
    c.force_login(user)
    return c


@pytest.fixture
def alice_client(alice):
    from django.test import Client

    return _client_for(Client, alice)


@pytest.fixture
def bob_client(bob):
    from django.test import Client

    return _client_for(Client, bob)


@pytest.fixture
def dana_client(dana):
    from django.test import Client

    return _client_for(Client, dana)


@pytest.fixture
def charlie_client(charlie):
    from django.test import Client

    return _client_for(Client, charlie)


@pytest.fixture
def catalog(db):
    """The shipped catalog, synced from catalog/specs."""
    call_command("sync_catalog", verbosity=0)
