import re

import pytest
from django.urls import reverse

from tenancy.models import ApiKey, hash_api_key
from tenancy.selectors import apikey_by_plaintext


@pytest.mark.django_db
def test_key_is_shown_once_and_stored_only_as_hash(alice_client, org):
    page = alice_client.post(
        reverse("apikeys"), {"name": "ci", "rpm_limit": "60", "allowed_models": "public/qwen3-8b, acme/chat"}
    ).content.decode()
    raw = re.search(r"(sk-[A-Za-z0-9_-]{40,})", page).group(1)
    key = ApiKey.objects.get(org=org)
    assert key.key_hash == hash_api_key(raw) and raw not in (key.prefix + key.name)
    assert key.allowed_models == ["acme/chat", "public/qwen3-8b"] and key.rpm_limit == 60
    again = alice_client.get(reverse("apikeys")).content.decode()
    assert raw not in again and key.prefix in again
    assert apikey_by_plaintext(raw) == key


@pytest.mark.django_db
def test_invalid_key_form_shows_errors(alice_client, org):
    page = alice_client.post(reverse("apikeys"), {"name": "", "rpm_limit": "-5", "spend_cap": "10"}).content.decode()
    assert "This field is required" in page and "Choose when the spend cap resets" in page
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_revoked_key_no_longer_authenticates(alice_client, org):
    page = alice_client.post(reverse("apikeys"), {"name": "temp"}).content.decode()
    raw = re.search(r"(sk-[A-Za-z0-9_-]{40,})", page).group(1)
    key = ApiKey.objects.get(org=org)
    alice_client.post(reverse("apikey-revoke", args=[key.pk]))
    assert apikey_by_plaintext(raw) is None
    assert "Revoked" in alice_client.get(reverse("apikeys")).content.decode()
