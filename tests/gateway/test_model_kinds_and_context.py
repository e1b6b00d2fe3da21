"""Requests a model cannot serve are refused in OpenAI's words before anything is reserved: the wrong endpoint for
the model's kind, ``max_tokens`` beyond the context window; and a prompt beyond it says ``context_length_exceeded``."""

from __future__ import annotations

import time
from decimal import Decimal

import openai
import pytest

from gateway import admission
from gateway.store import sredis
from metering import ingestion
from metering.models import UsageRecord
from tenancy.services import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "hi"}]
BALANCE = Decimal("100")


@pytest.fixture(autouse=True)
def _empty_usage_stream():
    sredis().delete(ingestion.stream_key())


@pytest.fixture
def capped(org):
    """A key with a spend cap (so admission reserves in Redis, not from a balance slice) on a published balance."""
    admission.publish_balance(org.pk, BALANCE)
    _key, raw = apikey_create(org=org, name="capped", spend_cap=Decimal("50"), spend_cap_period="monthly")
    return raw


def _records(org, count: int) -> list[UsageRecord]:
    deadline = time.monotonic() + 5
    while sredis().xlen(ingestion.stream_key()) < count:
        assert time.monotonic() < deadline, "usage records were not queued"
        time.sleep(0.02)
    ingestion.ingest_all()
    return list(UsageRecord.objects.filter(org=org).order_by("started_at"))


def _nothing_charged(org, records: list[UsageRecord], status: int, code: str) -> None:
    for record in records:
        assert (record.status, record.http_status, record.error_code) == ("error", status, code)
        assert not record.cost and record.prompt_tokens == record.completion_tokens == 0
    assert admission.open_holds(org.pk) == 0 and admission.published_balance(org.pk) == BALANCE


def test_chat_on_an_embedding_model_is_a_400_and_costs_nothing(any_v1, org, capped, public_embedding_model):
    client = openai.OpenAI(base_url=any_v1, api_key=capped, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="public/tiny-embed", messages=CHAT, max_tokens=5)
    error = caught.value.body
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_supported", "model")
    assert "`public/tiny-embed` is an embedding model" in error["message"] and "/v1/embeddings" in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="public/tiny-embed", prompt="Once", max_tokens=5)
    assert caught.value.body["code"] == "model_not_supported"
    _nothing_charged(org, _records(org, 2), 400, "model_not_supported")
    assert client.embeddings.create(model="public/tiny-embed", input="hello").data  # the right endpoint still works


def test_embeddings_on_a_chat_model_is_a_400_and_costs_nothing(any_v1, org, capped, public_model):
    client = openai.OpenAI(base_url=any_v1, api_key=capped, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="public/tiny-chat", input=["hello", "world"])
    error = caught.value.body
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_supported", "model")
    assert "`public/tiny-chat` is a chat model" in error["message"] and "Embeddings API" in error["message"]
    _nothing_charged(org, _records(org, 1), 400, "model_not_supported")
