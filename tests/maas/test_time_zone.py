"""Times are shown in the user's time zone, chosen on the account page; the platform's default is ``TIME_ZONE``."""

from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.errors import ApplicationError
from deployments.models import EventKind, ServiceEvent
from tenancy.models import AuditEvent, UserProfile
from tenancy.services import profile_set_time_zone
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db
ACCOUNT = reverse("account")
AT = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


@pytest.fixture
def timeline(org):
    service = ServiceFactory(org=org, name="tz")
    ServiceEvent.objects.create(service=service, kind=EventKind.STATUS, status="Running", created_at=AT)
    return reverse("deployments:service-detail", args=[service.pk])


def test_the_platform_default_is_the_documented_asia_shanghai():
    assert settings.TIME_ZONE == "Asia/Shanghai"
    readme = (settings.BASE_DIR / "README.md").read_text()
    assert "| `TIME_ZONE` |" in readme and "`Asia/Shanghai`" in readme.split("| `TIME_ZONE` |")[1].split("\n")[0]


def test_without_a_choice_times_are_in_the_platform_zone(alice_client, timeline):
    page = alice_client.get(timeline).content.decode()
    assert "2026-03-01 20:30:05" in page  # 12:30 UTC in Asia/Shanghai


def test_a_chosen_zone_is_saved_audited_and_used_on_every_page(alice_client, alice, bob_client, timeline):
    response = alice_client.post(ACCOUNT, {"time_zone": "Europe/Berlin"})
    assert response.status_code == 302 and response.url == ACCOUNT
    assert UserProfile.objects.get(user=alice).time_zone == "Europe/Berlin"
    assert AuditEvent.objects.filter(action="user.time_zone", actor=alice, data__to="Europe/Berlin").exists()
    assert "2026-03-01 13:30:05" in alice_client.get(timeline).content.decode()  # CET
    assert "2026-03-01 20:30:05" in bob_client.get(timeline).content.decode()  # Bob keeps the default
    page = alice_client.get(ACCOUNT).content.decode()
    assert '<option value="Europe/Berlin" selected>' in page and ("(CET)" in page or "(CEST)" in page)


def test_the_account_page_offers_the_default_and_every_zone_in_both_languages(alice_client):
    english = alice_client.get(ACCOUNT).content.decode()
    assert "Platform default (Asia/Shanghai)" in english and '<option value="America/New_York">' in english
    chinese = alice_client.get(ACCOUNT, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "平台默认（Asia/Shanghai）" in chinese and "时区" in chinese and "账号设置" in chinese
    assert '<option value="UTC">' in english and '<option value="US/Eastern">' not in english  # no old aliases


def test_back_to_the_default(alice_client, alice, timeline):
    profile_set_time_zone(user=alice, time_zone="America/New_York")
    alice_client.post(ACCOUNT, {"time_zone": ""})
    assert UserProfile.objects.get(user=alice).time_zone == ""
    assert "2026-03-01 20:30:05" in alice_client.get(timeline).content.decode()


def test_an_unknown_zone_is_refused_with_a_message_and_nothing_saved(alice_client, alice):
    page = alice_client.post(ACCOUNT, {"time_zone": "Mars/Olympus_Mons"}).content.decode()
    assert "Select a valid choice" in page and not UserProfile.objects.filter(user=alice).exists()
    with pytest.raises(ApplicationError) as caught:
        profile_set_time_zone(user=alice, time_zone="Mars/Olympus_Mons")
    assert caught.value.field == "time_zone" and "Mars/Olympus_Mons" in caught.value.message


def test_another_session_gets_the_zone_at_its_next_log_in(client, alice, timeline):
    profile_set_time_zone(user=alice, time_zone="America/New_York")  # chosen on another device
    client.force_login(alice)
    assert "2026-03-01 07:30:05" in client.get(timeline).content.decode()  # EST


def test_a_request_reads_the_zone_from_the_session_not_the_database(alice_client, timeline):
    alice_client.post(ACCOUNT, {"time_zone": "Europe/Berlin"})
    with CaptureQueriesContext(connection) as queries:
        page = alice_client.get(timeline).content.decode()
    assert "2026-03-01 13:30:05" in page
    assert [q["sql"] for q in queries.captured_queries if UserProfile._meta.db_table in q["sql"]] == []


def test_a_zone_the_tz_database_lost_falls_back_to_the_default(client, alice, timeline):
    UserProfile.objects.create(user=alice, time_zone="Nowhere/Gone")  # written by an older tz database
    client.force_login(alice)
    response = client.get(timeline)
    assert response.status_code == 200 and "2026-03-01 20:30:05" in response.content.decode()


def test_visitors_must_log_in(client):
    response = client.get(ACCOUNT)
    assert response.status_code == 302 and reverse("login") in response.url
