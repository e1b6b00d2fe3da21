"""Refusals in OpenAI's shape: bad keys, revoked and expired keys, malformed bodies, huge bodies."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.core.management import call_command
from django.utils import timezone

from tenancy.models import ApiKey, hash_api_key
from tenancy.services import apikey_create, apikey_revoke

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "hi"}]


def _post(v1, key, body, **kwargs):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.post(v1 + "/chat/completions", headers=headers, content=body, timeout=10, **kwargs)


def _error(response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_missing_and_wrong_keys_get_401(v1, public_model):
    assert _error(httpx.get(v1 + "/models"))["code"] == "missing_api_key"
    response = httpx.get(v1 + "/models", headers={"Authorization": "Bearer sk-" + "x" * 40})
    assert response.status_code == 401 and _error(response)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=v1, api_key="sk-nope").chat.completions.create(model="public/tiny-chat", messages=CHAT)


def test_revoked_key_fails_within_a_second(v1, key_row, public_model):
    client = openai.OpenAI(base_url=v1, api_key=key_row.raw, max_retries=0)
    assert client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2).choices
    apikey_revoke(key=key_row)
    time.sleep(1.0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2)


def test_expired_key_is_refused(v1, org, public_model):
    key, raw = apikey_create(org=org, name="short", expires_at=timezone.now() + timedelta(seconds=2))
    client = openai.OpenAI(base_url=v1, api_key=raw, max_retries=0)
    assert client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2).choices
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    time.sleep(2.1)  # the cached copy also carries the original expiry, which has passed by now
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2)


@pytest.mark.parametrize(
    "body, param, code",
    [
        (b"{not json", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_body"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "missing_required_parameter"),
        (b'{"model": 5, "messages": []}', "model", "invalid_type"),
        (b'{"model": "public/tiny-chat"}', "messages", "missing_required_parameter"),
        (b'{"model": "public/tiny-chat", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "public/tiny-chat", "messages": []}', "messages", "empty_array"),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages",
            "invalid_value",
        ),
        # an unhashable role was a 500 (found by schemathesis, tests/gateway/test_openapi.py)
        (b'{"model": "public/tiny-chat", "messages": [{"role": {}, "content": "x"}]}', "messages", "invalid_value"),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": ["user"], "content": "x"}]}',
            "messages",
            "invalid_value",
        ),
        (b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', "model", "invalid_value"),
        (b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": 7}]}', "messages", "invalid_type"),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}',
            "max_tokens",
            "invalid_type",
        ),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            "max_tokens",
            "invalid_value",
        ),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            "temperature",
            "invalid_value",
        ),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream",
            "invalid_type",
        ),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], '
            b'"stream_options": {"include_usage": true}}',
            "stream_options",
            "invalid_value",
        ),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}',
            "frobnicate",
            "unknown_parameter",
        ),
    ],
)
def test_invalid_bodies_get_a_precise_400(v1, api_key, public_model, body, param, code):
    response = _post(v1, api_key, body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_huge_body_gets_413(v1, api_key, public_model):
    huge = b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "' + b"a" * (9 << 20) + b'"}]}'
    response = _post(v1, api_key, huge)
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"


def test_too_long_prompt_is_the_upstreams_400_not_a_500(any_v1, api_key, public_model):
    long = " ".join(["word"] * 40000)  # the simulator serves 32768 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        openai.OpenAI(base_url=any_v1, api_key=api_key).chat.completions.create(
            model="public/tiny-chat", messages=[{"role": "user", "content": long}], max_tokens=10
        )
    assert "public/tiny-chat" in str(caught.value) or "context" in str(caught.value)


def test_unknown_endpoint_and_wrong_method(v1, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    assert _error(httpx.get(v1 + "/nope", headers=headers))["code"] == "unknown_url"
    response = httpx.get(v1 + "/chat/completions", headers=headers)
    assert response.status_code == 405 and _error(response)["code"] == "method_not_allowed"


def test_create_api_key_command_prints_a_working_key(org, capsys):
    call_command("create_api_key", "--org", "acme", "--name", "ci", "--rpm", "30")
    raw = capsys.readouterr().out.strip()
    assert raw.startswith("sk-") and len(raw) >= 43
    key = ApiKey.objects.get(key_hash=hash_api_key(raw))
    assert key.org == org and key.name == "ci" and key.rpm_limit == 30 and key.prefix == raw[:10]


def test_create_api_key_command_refuses_an_unknown_org(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No organization"):
        call_command("create_api_key", "--org", "ghost", "--name", "ci")


def test_requests_refused_for_their_body_still_leave_one_usage_record(v1, org, key_row, public_model):
    from gateway.store import sredis
    from metering import ingestion
    from metering.models import UsageRecord

    sredis().delete(ingestion.stream_key())
    sent = [
        (b"{not json", 400, "invalid_json", ""),
        (
            b'{"model": "public/tiny-chat", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}',
            400,
            "unknown_parameter",
            "public/tiny-chat",
        ),
        (b'{"model": "public/tiny-chat", "messages": "' + b"a" * (9 << 20) + b'"}', 413, "request_too_large", ""),
    ]
    ids = {}
    for body, status, code, model in sent:
        response = _post(v1, key_row.raw, body)
        assert response.status_code == status and _error(response)["code"] == code
        ids[response.headers["x-request-id"]] = (status, code, model)
    deadline = time.monotonic() + 5
    while sredis().xlen(ingestion.stream_key()) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.02)
    ingestion.ingest_all()
    records = {str(r.id): r for r in UsageRecord.objects.filter(org=org)}
    assert set(records) == set(ids)
    for request_id, (status, code, model) in ids.items():
        record = records[request_id]
        assert (record.status, record.http_status, record.error_code, record.model_id) == ("error", status, code, model)
        assert record.api_key_id == key_row.pk and record.prompt_tokens == record.completion_tokens == 0
        assert record.cost is None and record.endpoint == "chat.completions"
