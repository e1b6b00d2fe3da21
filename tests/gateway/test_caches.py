"""The gateway's caches follow writes to services, replicas and catalog models (the serving epoch), not a TTL."""

from __future__ import annotations

import time

import httpx
import pytest
from django.db import transaction

from core import signals
from gateway import lookups

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "hi"}]


def _chat(v1, key, model):
    return httpx.post(
        v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
        json={"model": model, "messages": CHAT, "max_tokens": 2},
    )


def _first_status_within(v1, key, model, wanted: int, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if _chat(v1, key, model).status_code == wanted:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_a_replica_going_unready_stops_receiving_traffic_within_a_second(v1, api_key, org_service):
    assert lookups.ENDPOINTS_TTL >= 10  # so only the serving epoch can explain what follows
    assert _chat(v1, api_key, "acme/my-llama").status_code == 200
    replica = org_service.replica_set.get()
    replica.ready = False
    replica.save()
    took = _first_status_within(v1, api_key, "acme/my-llama", 503, seconds=3)
    assert took is not None and took < 1.5
    replica.ready = True
    replica.save()
    took = _first_status_within(v1, api_key, "acme/my-llama", 200, seconds=3)
    assert took is not None and took < 1.5


def test_a_service_created_after_a_404_is_callable_at_once(
    v1, api_key, org, simulator, make_catalog_model, make_service
):
    assert _chat(v1, api_key, "acme/my-llama").status_code == 404  # remembered as absent for a second
    make_service(org=org, model=make_catalog_model("llama-late"), name="my-llama", replicas=[simulator])
    took = _first_status_within(v1, api_key, "acme/my-llama", 200, seconds=3)
    assert took is not None and took < 0.8  # before the 1 s negative TTL would have expired


def test_serving_changed_is_sent_once_per_transaction_and_not_on_rollback(
    org, simulator, make_catalog_model, make_service
):
    sent = []

    def receiver(**_kwargs):
        sent.append(1)

    signals.serving_changed.connect(receiver, dispatch_uid="test-serving-changed")
    try:
        with transaction.atomic():
            make_service(org=org, model=make_catalog_model("llama-a"), name="a", replicas=[simulator, simulator])
            assert sent == []  # not before the commit
        assert sent == [1]  # a model, a service and two replicas written: one signal
        with pytest.raises(RuntimeError), transaction.atomic():
            make_service(org=org, model=make_catalog_model("llama-b"), name="b", replicas=[simulator])
            raise RuntimeError
        assert sent == [1]
        make_catalog_model("llama-c")  # autocommit: at once
        assert sent == [1, 1]
    finally:
        signals.serving_changed.disconnect(dispatch_uid="test-serving-changed")
