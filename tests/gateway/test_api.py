"""The /v1 API through the official openai SDK (sync, async, streaming) against a running uvicorn server."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about TCP."}]


def test_models_lists_public_models_and_the_orgs_services(v1, api_key, public_model, org_service):
    client = openai.OpenAI(base_url=v1, api_key=api_key)
    ids = {m.id for m in client.models.list()}
    assert ids == {"public/tiny-chat", "acme/my-llama"}
    assert client.models.retrieve("acme/my-llama").owned_by == "acme"


def test_chat_completion_answers_with_the_client_model_id_and_usage(any_v1, api_key, public_model):
    client = openai.OpenAI(base_url=any_v1, api_key=api_key)
    raw = client.chat.completions.with_raw_response.create(model="public/tiny-chat", messages=CHAT, max_tokens=12)
    answer = raw.parse()
    assert answer.model == "public/tiny-chat"
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 12
    assert raw.headers["x-request-id"]


def test_stream_without_include_usage_hides_the_usage_chunk(any_v1, api_key, org_service):
    client = openai.OpenAI(base_url=any_v1, api_key=api_key)
    chunks = list(
        client.chat.completions.create(
            model="acme/my-llama", messages=CHAT, max_tokens=20, stream=True, extra_body={"ignore_eos": True}
        )
    )
    assert all(c.model == "acme/my-llama" for c in chunks)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 20 and text


def test_stream_with_include_usage_ends_with_usage(any_v1, api_key, public_model):
    client = openai.OpenAI(base_url=any_v1, api_key=api_key)
    chunks = list(
        client.chat.completions.create(
            model="public/tiny-chat",
            messages=CHAT,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices
    assert sum(1 for c in chunks if c.usage is not None) == 1


def test_streams_are_the_same_through_the_plain_asgi_path(api_key, public_model, run_gateway):
    """Under uvicorn's h11 protocol there is no direct relay: one ASGI message per upstream read, same bytes."""
    with run_gateway(http="h11") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=api_key)
        for _ in range(2):  # the second stream reuses the pooled replica connection the first one released
            chunks = list(
                client.chat.completions.create(
                    model="public/tiny-chat",
                    messages=CHAT,
                    max_tokens=30,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True},
                )
            )
            content = [c for c in chunks if c.choices and c.choices[0].delta.content]
            assert len(content) == 30 and all(c.model == "public/tiny-chat" for c in chunks)
            assert chunks[-1].usage.completion_tokens == 30 and not chunks[-1].choices


def test_completions_and_embeddings(any_v1, api_key, public_model, public_embedding_model):
    client = openai.OpenAI(base_url=any_v1, api_key=api_key)
    completion = client.completions.create(model="public/tiny-chat", prompt="Once upon a time", max_tokens=5)
    assert completion.model == "public/tiny-chat" and completion.usage.completion_tokens <= 5
    embedding = client.embeddings.create(model="public/tiny-embed", input=["hello", "world"])
    assert embedding.model == "public/tiny-embed" and len(embedding.data) == 2 and embedding.usage.prompt_tokens > 0


def test_async_sdk_streams_concurrently(v1, api_key, public_model):
    async def run():
        client = openai.AsyncOpenAI(base_url=v1, api_key=api_key)

        async def one(i):
            stream = await client.chat.completions.create(
                model="public/tiny-chat",
                messages=[{"role": "user", "content": f"question {i}"}],
                max_tokens=6,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            return [c async for c in stream]

        results = await asyncio.gather(*(one(i) for i in range(10)))
        await client.close()
        return results

    for chunks in asyncio.run(run()):
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 6


def test_another_orgs_service_is_unknown(v1, other_org, public_model, org_service):
    from tenancy.services import apikey_create

    _key, theirs = apikey_create(org=other_org, name="rival")
    client = openai.OpenAI(base_url=v1, api_key=theirs)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="acme/my-llama", messages=CHAT)
    assert caught.value.body["code"] == "model_not_found"
    assert {m.id for m in client.models.list()} == {"public/tiny-chat"}


def test_unknown_model_is_404(any_v1, api_key, public_model):
    client = openai.OpenAI(base_url=any_v1, api_key=api_key)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="public/nope", messages=CHAT)


def test_key_allow_list_refuses_other_models_with_403(v1, org, public_model, org_service):
    from tenancy.services import apikey_create

    _key, raw = apikey_create(org=org, name="only-dedicated", allowed_models=["acme/my-llama"])
    client = openai.OpenAI(base_url=v1, api_key=raw)
    assert client.chat.completions.create(model="acme/my-llama", messages=CHAT, max_tokens=2).choices
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT)
    assert [m.id for m in client.models.list()] == ["acme/my-llama"]


def test_every_kind_of_answer_carries_nosniff(any_v1, api_key, public_model):
    auth = {"Authorization": f"Bearer {api_key}"}
    body = {"model": "public/tiny-chat", "messages": CHAT, "max_tokens": 4}
    answers = [
        httpx.get(any_v1 + "/models", headers=auth),
        httpx.get(any_v1 + "/models/public/tiny-chat", headers=auth),
        httpx.get(any_v1 + "/models"),
        httpx.post(any_v1 + "/chat/completions", headers=auth, json=body, timeout=10),
        httpx.post(any_v1 + "/chat/completions", headers=auth, json={**body, "stream": True}, timeout=10),
        httpx.post(any_v1 + "/chat/completions", headers=auth, content=b"{not json", timeout=10),
        httpx.get(any_v1 + "/chat/completions", headers=auth),
        httpx.get(any_v1 + "/nowhere", headers=auth),
    ]
    assert [r.status_code for r in answers] == [200, 200, 401, 200, 200, 400, 405, 404]
    assert answers[4].headers["content-type"].startswith("text/event-stream")
    assert all(r.headers["x-content-type-options"] == "nosniff" for r in answers)
