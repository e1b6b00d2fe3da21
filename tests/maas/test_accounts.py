import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from maas.management.commands.seed_demo import DEMO_EMAIL, DEMO_PASSWORD
from tenancy.models import Invitation, Membership, Organization, Role
from tenancy.selectors import SESSION_ORG_KEY
from tenancy.services import user_signup
from tests.factories import MembershipFactory, OrganizationFactory

User = get_user_model()


@pytest.mark.django_db
def test_signup_creates_personal_org_and_logs_in(client):
    response = client.post(
        reverse("signup"), {"name": "Dana", "email": "Dana@Example.com", "password": "a-long-passphrase-9"}
    )
    assert response.status_code == 302
    user = User.objects.get(username="dana@example.com")
    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER and membership.org.personal
    assert re.fullmatch(r"u-[0-9a-f]{12}", membership.org.namespace)
    client.get(reverse("apikeys"))
    assert client.session[SESSION_ORG_KEY] == str(membership.org_id)


@pytest.mark.django_db
def test_signup_refuses_duplicate_email_and_weak_password(client, alice):
    dup = client.post(reverse("signup"), {"email": "alice@example.com", "password": "a-long-passphrase-9"})
    assert "already exists" in dup.content.decode()
    weak = client.post(reverse("signup"), {"email": "new@example.com", "password": "123"})
    assert weak.status_code == 200 and not User.objects.filter(username="new@example.com").exists()


@pytest.mark.django_db
def test_login_logout(client, alice):
    response = client.post(reverse("login"), {"username": "alice@example.com", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert client.get(reverse("apikeys")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("apikeys")).status_code == 302


@pytest.mark.django_db
def test_password_reset_sends_a_working_link(client, alice):
    client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "fresh-passphrase-42", "new_password2": "fresh-passphrase-42"},
    )
    assert done.status_code == 302
    client.post(reverse("logout"))
    login = client.post(reverse("login"), {"username": "alice@example.com", "password": "fresh-passphrase-42"})
    assert login.status_code == 302 and client.get(reverse("apikeys")).status_code == 200


def current_org(client) -> Organization:
    """The organization the console acts for after a page load."""
    client.get(reverse("apikeys"))
    return Organization.objects.get(pk=client.session[SESSION_ORG_KEY])


@pytest.mark.django_db
def test_the_demo_login_lands_in_the_demo_org(client):
    """The README's demo logs in as demo@example.com and works in the organization ``demo``, every time."""
    call_command("seed_demo", verbosity=0)
    for _ in range(2):
        assert client.post(reverse("login"), {"username": DEMO_EMAIL, "password": DEMO_PASSWORD}).status_code == 302
        assert current_org(client).namespace == "demo"
        client.post(reverse("logout"))


@pytest.mark.django_db
def test_the_org_a_user_chose_is_where_the_next_login_lands(client, org):
    dana = user_signup(email="dana@example.com", password="a-long-passphrase-9", name="Dana")
    MembershipFactory(org=org, user=dana, role=Role.MEMBER)
    personal = dana.memberships.get(org__personal=True).org
    credentials = {"username": "Dana@Example.com", "password": "a-long-passphrase-9"}  # the address as typed
    assert client.post(reverse("login"), credentials).status_code == 302
    assert current_org(client) == personal  # nothing chosen yet: the personal organization
    client.post(reverse("org-switch"), {"org": str(org.pk)})
    client.post(reverse("logout"))
    client.post(reverse("login"), credentials)
    assert current_org(client) == org
    client.post(reverse("org-switch"), {"org": str(personal.pk)})
    client.post(reverse("logout"))
    client.post(reverse("login"), credentials)
    assert current_org(client) == personal
    # Re-seeding the demo data (every ./dev up) leaves a demo user's own choice alone.
    call_command("seed_demo", verbosity=0)
    demo_user = User.objects.get(username=DEMO_EMAIL)
    client.post(reverse("logout"))
    client.force_login(demo_user)
    client.post(reverse("org-switch"), {"org": str(demo_user.memberships.get(org__personal=True).org_id)})
    call_command("seed_demo", verbosity=0)
    client.post(reverse("logout"))
    client.post(reverse("login"), {"username": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert current_org(client).personal


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "label"), [("en", "E-mail"), ("zh-CN,zh;q=0.9", "邮箱")])
def test_the_login_form_asks_for_the_e_mail(client, language, label):
    page = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert re.search(rf"<label[^>]*for=\"id_username\"[^>]*>{label}", page)
    assert 'type="email"' in page and "Username" not in page and "用户名" not in page


@pytest.mark.django_db
def test_switching_to_an_org_you_do_not_belong_to_is_404(alice_client, other_org, org):
    assert alice_client.post(reverse("org-switch"), {"org": str(other_org.pk)}).status_code == 404
    assert alice_client.post(reverse("org-switch"), {"org": "not-a-uuid"}).status_code == 404
    assert alice_client.post(reverse("org-switch"), {"org": str(org.pk), "next": "/keys/"}).status_code == 302


@pytest.mark.django_db
def test_user_in_two_orgs_switches_current_org(alice, alice_client, org):
    second = OrganizationFactory(name="Side project", namespace="side")
    MembershipFactory(org=second, user=alice, role=Role.MEMBER)
    alice_client.post(reverse("org-switch"), {"org": str(second.pk)})
    page = alice_client.get(reverse("apikeys")).content.decode()
    assert "side" in page
    alice_client.post(reverse("org-switch"), {"org": str(org.pk)})
    assert "acme" in alice_client.get(reverse("apikeys")).content.decode()


@pytest.mark.django_db
def test_create_org(alice_client):
    response = alice_client.post(reverse("org-new"), {"name": "Team X", "namespace": "team-x"})
    assert response.status_code == 302
    assert Organization.objects.get(namespace="team-x").memberships.get().role == Role.OWNER
    taken = alice_client.post(reverse("org-new"), {"name": "Again", "namespace": "team-x"})
    assert "is taken" in taken.content.decode()
    bad = alice_client.post(reverse("org-new"), {"name": "Bad", "namespace": "Bad_NS"})
    assert bad.status_code == 200 and not Organization.objects.filter(name="Bad").exists()


@pytest.mark.django_db
def test_invitation_flow(alice_client, client, org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("org-members"), {"email": "erin@example.com", "role": "member"})
    assert response.status_code == 200
    assert len(mail.outbox) == 1
    token_path = re.search(r"(/invitations/[^/\s]+/)", mail.outbox[0].body).group(1)
    erin = User.objects.create_user("erin@example.com", "erin@example.com", "erin-passphrase-1")
    client.force_login(erin)
    assert client.post(token_path).status_code == 302
    assert Membership.objects.get(org=org, user=erin).role == Role.MEMBER
    # single use
    assert "no longer valid" in client.get(token_path).content.decode()


@pytest.mark.django_db
def test_invitation_for_someone_else_is_refused(alice_client, bob_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("org-members"), {"email": "frank@example.com", "role": "admin"})
    token_path = re.search(r"(/invitations/[^/\s]+/)", mail.outbox[0].body).group(1)
    response = bob_client.post(token_path)
    assert "log in with that address" in response.content.decode()


@pytest.mark.django_db
def test_member_cannot_invite_and_last_owner_stays(bob_client, alice_client, alice, org):
    assert bob_client.post(reverse("org-members"), {"email": "x@example.com", "role": "member"}).status_code == 403
    assert not Invitation.objects.exists()
    owner = Membership.objects.get(org=org, user=alice)
    alice_client.post(reverse("member-role", args=[owner.pk]), {"role": "member"})
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


LOCKED = "Too many failed log-ins for this account or from this address"


def _log_in(client, password, email="alice@example.com", ip="203.0.113.7"):
    return client.post(reverse("login"), {"username": email, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.django_db
def test_twenty_wrong_passwords_lock_the_account_until_the_cool_off(client, alice, settings):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(20):
            assert _log_in(client, "wrong-password").status_code in (200, 429)
        refused = _log_in(client, "correct-horse-battery")
        assert refused.status_code == 429 and LOCKED in refused.content.decode()
        assert "_auth_user_id" not in client.session
        # From another address the account stays locked: the count is per account as well as per address.
        assert _log_in(client, "correct-horse-battery", ip="198.51.100.9").status_code == 429
    with time_machine.travel(start + settings.AXES_COOLOFF_TIME + timedelta(seconds=1), tick=False):
        assert _log_in(client, "correct-horse-battery").status_code == 302


@pytest.mark.django_db
def test_one_address_guessing_many_accounts_is_locked_out(client, alice, bob, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        _log_in(client, "wrong-password", email=f"nobody{n}@example.com")
    refused = _log_in(client, "correct-horse-battery", email="bob@example.com")
    assert refused.status_code == 429
    assert _log_in(client, "correct-horse-battery", email="bob@example.com", ip="198.51.100.9").status_code == 302
