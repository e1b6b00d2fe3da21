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


def test_max_tokens_beyond_the_context_window_is_a_400_before_any_reservation(any_v1, org, api_key, public_model):
    """A balance far below the worst case of such a max_tokens: it used to be refused as 429 insufficient_quota."""
    admission.publish_balance(org.pk, Decimal("0.05"))
    client = openai.OpenAI(base_url=any_v1, api_key=api_key, max_retries=0)
    for param in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="public/tiny-chat", messages=CHAT, **{param: 100_000})
        error = caught.value.body
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", param)
        assert f"'{param}' is too large: 100000" in error["message"]
        assert "maximum context length is 8192 tokens" in error["message"]  # the service's max_model_len
    for record in _records(org, 2):
        assert (record.http_status, record.error_code) == (400, "invalid_value") and not record.cost
    assert admission.open_holds(org.pk) == 0 and admission.published_balance(org.pk) == Decimal("0.05")


def test_a_prompt_beyond_the_context_window_says_context_length_exceeded(any_v1, org, api_key, public_model):
    long = " ".join(["word"] * 40000)  # the simulator serves 32768 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        openai.OpenAI(base_url=any_v1, api_key=api_key, max_retries=0).chat.completions.create(
            model="public/tiny-chat", messages=[{"role": "user", "content": long}], max_tokens=10
        )
    error = caught.value.body
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "maximum context length" in error["message"] and "public/qwen-small" not in error["message"]
    (record,) = _records(org, 1)
    assert (record.http_status, record.error_code) == (400, "context_length_exceeded") and not record.cost
    assert admission.open_holds(org.pk) == 0


def test_a_spend_cap_refusal_says_whether_the_cap_is_reached_or_only_this_requests_worst_case_exceeds_it(
    v1, org, public_model
):
    from gateway import lookups
    from tenancy.models import ApiKey

    admission.publish_balance(org.pk, BALANCE)
    key, raw = apikey_create(org=org, name="small cap", spend_cap=Decimal("0.0002"), spend_cap_period="daily")
    client = openai.OpenAI(base_url=v1, api_key=raw, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:  # nothing spent yet: 1000 tokens' worst case is too much
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=1000)
    message = caught.value.body["message"]
    assert caught.value.body["code"] == "insufficient_quota" and "reached" not in message
    assert "worst-case cost 0.006" in message and "exceeds the 0.0002 CNY left" in message
    assert "lower max_tokens" in message
    assert client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2).choices  # fits
    ApiKey.objects.filter(pk=key.pk).update(spend_cap=Decimal("0.00001"))  # now below what was spent
    lookups.bump_auth_epoch()
    time.sleep(1.0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2)
    assert "reached its spend cap" in caught.value.body["message"]
