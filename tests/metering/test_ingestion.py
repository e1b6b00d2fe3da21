"""Usage ingestion under poison: storable values, per-entry fallback, dead letters, no starvation, lag for admins."""

from __future__ import annotations

import logging
import time
import uuid

import orjson
import pytest
from django.test import Client

from core.redis import client as sredis
from metering import ingestion, selectors
from metering.models import UsageRecord
from tenancy.models import AuditEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_usage_streams():
    sredis().delete(ingestion.stream_key(), ingestion.dead_letter_key())
    yield
    sredis().delete(ingestion.stream_key(), ingestion.dead_letter_key())


def _record(org, **changes) -> dict:
    now = time.time()
    record = {
        "id": str(uuid.uuid4()),
        "org_id": org.id,
        "api_key_id": None,
        "user_id": None,
        "source": "api",
        "endpoint": "chat.completions",
        "model_id": "public/tiny-chat",
        "catalog_model_id": None,
        "service_id": None,
        "public": False,
        "replica": "r-0",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "latency_ms": 40,
        "ttft_ms": 12,
        "status": "ok",
        "http_status": 200,
        "error_code": "",
        "stream": False,
        "prompt_hash": "",
        "params": {},
        "served_model_version": "",
        "cost": None,
        "currency": "",
        "started_at": now - 0.04,
        "finished_at": now,
    }
    return record | changes


def _queue(org, count: int = 1, **changes) -> list[str]:
    records = [_record(org, **changes) for _ in range(count)]
    for record in records:
        ingestion.append_sync(record)
    return [r["id"] for r in records]


def _poison(org) -> str:
    """A record PostgreSQL refuses whatever is done to it: a cost beyond numeric(18, 6)."""
    return _queue(org, cost="1e20")[0]


def _stored(ids) -> set[str]:
    return {str(pk) for pk in UsageRecord.objects.filter(pk__in=ids).values_list("pk", flat=True)}


def test_nul_anywhere_and_counters_out_of_range_are_made_storable(org):
    nul = "a\x00b"
    [record_id] = _queue(
        org,
        model_id=nul,
        replica=nul,
        error_code=nul,
        prompt_hash=nul,
        served_model_version=nul,
        params={nul: [nul, {"k\x00": nul}], "stop": nul},
        prompt_tokens=2**40,
        latency_ms=-3,
        http_status=99_999,
    )
    assert ingestion.ingest_all() == 1
    record = UsageRecord.objects.get(pk=record_id)
    assert record.model_id == record.replica == record.served_model_version == "a\ufffdb"
    assert record.params == {"a\ufffdb": ["a\ufffdb", {"k\ufffd": "a\ufffdb"}], "stop": "a\ufffdb"}
    assert record.prompt_tokens == 2**31 - 1 and record.latency_ms == 0 and record.http_status == 2**15 - 1


def test_a_batch_with_one_poison_entry_stores_all_the_others(org):
    before = _queue(org, 3)
    poison = _poison(org)
    after = _queue(org, 3)
    assert ingestion.ingest_batch() == 6
    assert _stored(before + after) == set(before + after) and not _stored([poison])
    assert sredis().xlen(ingestion.stream_key()) == 1  # only the poison entry stays behind, pending
    assert selectors.ingestion_lag().pending == 1


def test_a_poison_entry_is_dead_lettered_after_max_attempts_and_never_holds_up_later_entries(org, settings, caplog):
    settings.USAGE_MAX_ATTEMPTS = 3
    poison = _poison(org)
    for attempt in range(1, 4):
        fresh = _queue(org, 2)
        # Re-claimed at once (idle 0): the poison entry comes back every batch, new entries are read too.
        with caplog.at_level(logging.ERROR, logger="metering.ingestion"):
            assert ingestion.ingest_batch(claim_idle_ms=0) == 2 + (attempt == 3)
        assert _stored(fresh) == set(fresh)
    assert not _stored([poison]) and sredis().xlen(ingestion.stream_key()) == 0
    [letter] = selectors.dead_letters()
    assert orjson.loads(letter.raw)["id"] == poison and "refused 3 times" in letter.error
    assert "numeric field overflow" in letter.error
    assert any("ALERT" in r.getMessage() and letter.entry in r.getMessage() for r in caplog.records)
    lag = selectors.ingestion_lag()
    assert (lag.queued, lag.pending, lag.dead_letters, lag.oldest_age_s) == (0, 0, 1, None)


def test_an_unreadable_entry_is_dead_lettered_at_once(org):
    sredis().xadd(ingestion.stream_key(), {"r": b"{not json"})
    ids = _queue(org, 2)
    assert ingestion.ingest_batch() == 3
    assert _stored(ids) == set(ids)
    [letter] = selectors.dead_letters()
    assert letter.raw == "{not json" and "unreadable" in letter.error


def test_lag_is_the_age_of_the_oldest_entry_not_yet_stored(org):
    _queue(org, 2)
    time.sleep(0.2)
    lag = selectors.ingestion_lag()
    assert lag.queued == 2 and lag.pending == 0 and lag.oldest_age_s >= 0.2


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(UserFactory(email="root@example.com", is_staff=True))
    return client


def _dead_letter(org, settings) -> str:
    settings.USAGE_MAX_ATTEMPTS = 1
    poison = _poison(org)
    assert ingestion.ingest_batch() == 1
    return poison


def test_staff_see_the_lag_and_dead_letters_and_retry_one_after_a_fix(org, settings, staff_client):
    poison = _dead_letter(org, settings)
    [letter] = selectors.dead_letters()
    page = staff_client.get("/billing/usage/ingestion/")
    assert page.status_code == 200
    assert letter.entry in page.content.decode() and "numeric field overflow" in page.content.decode()
    # The fix: the column now holds the value (simulated by a cost PostgreSQL accepts in the queued entry).
    fixed = orjson.loads(letter.raw) | {"cost": "0.5"}
    sredis().xadd(ingestion.dead_letter_key(), {"entry": letter.entry, "error": letter.error, "r": orjson.dumps(fixed)})
    sredis().xdel(ingestion.dead_letter_key(), letter.id)
    [letter] = selectors.dead_letters()
    response = staff_client.post(f"/billing/usage/ingestion/dead/{letter.id}/retry/")
    assert response.status_code == 302 and selectors.dead_letters() == []
    assert ingestion.ingest_all() == 1
    assert str(UsageRecord.objects.get(pk=poison).cost) == "0.500000"
    assert AuditEvent.objects.get(action="usage.dead_letter_retried").data["dead_letter"] == letter.id


def test_retrying_a_dead_letter_that_is_gone_says_so(staff_client):
    response = staff_client.post("/billing/usage/ingestion/dead/1-0/retry/", follow=True)
    assert response.status_code == 200 and "No dead-lettered usage entry 1-0." in response.content.decode()


def test_the_ingestion_page_is_for_platform_admins_only(org, settings, alice_client, bob_client, charlie_client):
    _dead_letter(org, settings)
    [letter] = selectors.dead_letters()
    for client in (alice_client, bob_client, charlie_client):
        assert client.get("/billing/usage/ingestion/").status_code == 404
        assert client.post(f"/billing/usage/ingestion/dead/{letter.id}/retry/").status_code == 404
    assert Client().get("/billing/usage/ingestion/").status_code == 302  # to the login page
    assert len(selectors.dead_letters()) == 1
