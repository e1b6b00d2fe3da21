"""The engine simulator against the official OpenAI SDK and raw HTTP: wire format, semantics, latency, faults."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from simulator import SimulatorConfig, run_simulator
from simulator.text import tokenize

MODEL = "sim-llama"
ALIAS = "sim-llama-alias"
PROMPT = [{"role": "user", "content": "Write a short note about the simulator and its tokens."}]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def simulator_url():
    config = SimulatorConfig(
        served_model_names=(MODEL, ALIAS),
        ttft_ms=15,
        itl_ms=1,
        prefill_ms_per_1k_tokens=0,
        max_model_len=2048,
        embedding_dim=64,
        model_version="sim-test-7",
        seed=7,
    )
    with run_simulator(config) as base_url:
        yield base_url


@pytest.fixture
def client(simulator_url):
    return openai.OpenAI(base_url=f"{simulator_url}/v1", api_key="unused", max_retries=0)


def sse_events(body: str) -> list[str]:
    assert body.endswith("\n\n"), "every SSE event ends with a blank line"
    events = body.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events)
    return [event[len("data: ") :] for event in events]


def stats(base_url: str) -> dict:
    return httpx.get(f"{base_url}/_sim/stats").json()


def patch_config(base_url: str, **settings) -> httpx.Response:
    return httpx.post(f"{base_url}/_sim/config", json=settings)


# ---------------------------------------------------------------- discovery and health


def test_models_list_has_vllm_shape(client, simulator_url):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL, ALIAS]
    raw = httpx.get(f"{simulator_url}/v1/models").json()
    assert raw["object"] == "list"
    item = raw["data"][1]
    assert item["object"] == "model" and item["owned_by"] == "vllm"
    assert item["root"] == MODEL and item["max_model_len"] == 2048 and isinstance(item["created"], int)


def test_health_is_empty_200_and_every_response_names_the_replica(simulator_url):
    response = httpx.get(f"{simulator_url}/health")
    assert response.status_code == 200 and response.content == b""
    host_port = simulator_url.removeprefix("http://")
    assert response.headers["x-simulator-replica"] == host_port
    assert httpx.get(f"{simulator_url}/v1/nope").headers["x-simulator-replica"] == host_port


def test_loading_replica_answers_503_until_loaded():
    with run_simulator(served_model_names=(MODEL,), load_seconds=0.6, wait_healthy=False) as base_url:
        assert httpx.get(f"{base_url}/health").status_code == 503
        response = httpx.post(f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": PROMPT})
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "ServiceUnavailableError"
        deadline = time.monotonic() + 3
        while httpx.get(f"{base_url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_cli_prints_listening_line_and_serves():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--port",
            "0",
            "--served-model-name",
            "cli-model",
            "--replica-id",
            "replica-a",
            "--ttft-ms",
            "1",
            "--itl-ms",
            "1",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        base_url = line.removeprefix("simulator listening on ")
        response = httpx.get(f"{base_url}/v1/models")
        assert response.json()["data"][0]["id"] == "cli-model"
        assert response.headers["x-simulator-replica"] == "replica-a"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# ---------------------------------------------------------------- chat completions


def test_chat_completion_has_full_openai_shape(client):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        max_tokens=12,
        temperature=0.7,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=3,
        user="alice",
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.system_fingerprint == "sim-test-7"
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    usage = completion.usage
    assert usage.completion_tokens == 12 == len(tokenize(choice.message.content))
    # Chat template: 5 tokens per message plus 3 for the generation prompt, around the content's own tokens.
    assert usage.prompt_tokens == len(tokenize(PROMPT[0]["content"])) + 5 + 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_same_request_gives_same_text_and_seed_changes_it(client):
    first = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=30)
    again = client.chat.completions.create(model=ALIAS, messages=PROMPT, max_tokens=30)
    reseeded = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=30, seed=99)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert reseeded.choices[0].message.content != first.choices[0].message.content


def test_without_max_tokens_the_answer_ends_naturally_with_stop(client):
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].finish_reason == "stop"
    assert 16 <= completion.usage.completion_tokens <= 256


def test_stream_is_framed_like_openai_with_usage_chunk(simulator_url):
    body = {
        "model": MODEL,
        "messages": PROMPT,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(f"{simulator_url}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], MODEL, "chat.completion.chunk")
    }
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:-2]
    assert len(tokens) == 8 and all(c["choices"][0]["finish_reason"] is None for c in tokens)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


def test_stream_without_include_usage_has_no_usage_chunk(simulator_url):
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 4, "stream": True}
    events = sse_events(httpx.post(f"{simulator_url}/v1/chat/completions", json=body).text)
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_and_non_stream_agree_on_text_and_usage(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Agreement check."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, stop=["zzzz"])
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=40,
        stop=["zzzz"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text == whole.choices[0].message.content
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)


def test_stop_string_cuts_the_answer_before_it(client):
    full = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=40).choices[0].message.content
    stop = full.split()[5]
    cut = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=40, stop=[stop, "never-seen"])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 40


def test_n_choices_each_get_an_index(client):
    completion = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=5, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage.completion_tokens == 15
    assert len({c.message.content for c in completion.choices}) == 3


@pytest.mark.asyncio
async def test_async_client_streams_and_completes(simulator_url):
    client = openai.AsyncOpenAI(base_url=f"{simulator_url}/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 6
    completion = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6)
    assert completion.object == "text_completion" and completion.usage.completion_tokens == 6
    await client.close()


# ---------------------------------------------------------------- completions and embeddings


def test_completions_stream_matches_non_stream(client):
    whole = client.completions.create(model=MODEL, prompt="The weather today", max_tokens=10)
    assert whole.id.startswith("cmpl-") and whole.choices[0].finish_reason == "length"
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="The weather today", max_tokens=10, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {c.object for c in chunks} == {"text_completion"}
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 10


def test_completions_default_to_16_tokens_and_accept_token_ids(client):
    completion = client.completions.create(model=MODEL, prompt=[101, 102, 103])
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens <= 16


def test_embeddings_have_requested_shape_in_both_encodings(client, simulator_url):
    # The SDK asks for base64 by default and decodes it.
    result = client.embeddings.create(model=MODEL, input=["first text", "second text"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 64 for d in result.data)
    assert result.usage.prompt_tokens == 4
    assert abs(sum(v * v for v in result.data[0].embedding) - 1.0) < 1e-4
    raw = httpx.post(
        f"{simulator_url}/v1/embeddings", json={"model": MODEL, "input": "first text", "encoding_format": "float"}
    ).json()
    assert raw["object"] == "list" and raw["data"][0]["object"] == "embedding"
    assert raw["data"][0]["embedding"] == pytest.approx(result.data[0].embedding)
    short = client.embeddings.create(model=MODEL, input="first text", dimensions=16)
    assert len(short.data[0].embedding) == 16
    packed = httpx.post(
        f"{simulator_url}/v1/embeddings", json={"model": MODEL, "input": "x", "encoding_format": "base64"}
    ).json()
    assert len(struct.unpack("<64f", base64.b64decode(packed["data"][0]["embedding"]))) == 64


# ---------------------------------------------------------------- errors


def test_unknown_model_is_404_in_openai_shape(client, simulator_url):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=PROMPT)
    response = httpx.post(f"{simulator_url}/v1/chat/completions", json={"model": "no-such-model", "messages": PROMPT})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `no-such-model` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (json.dumps({"model": MODEL}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "temperature": "hot"}).encode(), "temperature"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "temperature": 3}).encode(), "temperature"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "max_tokens": "10"}).encode(), "max_tokens"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "max_tokens": True}).encode(), "max_tokens"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "stream": "yes"}).encode(), "stream"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "stop": 5}).encode(), "stop"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "n": 0}).encode(), "n"),
        (json.dumps({"model": MODEL, "messages": PROMPT, "user": 5}).encode(), "user"),
        (json.dumps({"model": 7, "messages": PROMPT}).encode(), "model"),
    ],
)
def test_malformed_requests_are_400_in_openai_shape(simulator_url, body, param):
    response = httpx.post(
        f"{simulator_url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400 and error["param"] == param
    assert error["message"]


def test_prompt_plus_max_tokens_beyond_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=2040)
    assert "maximum context length is 2048 tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="word " * 3000)


# ---------------------------------------------------------------- metrics and prefix cache


def test_metrics_use_vllm_names_and_counters_move(client, simulator_url):
    def scrape() -> dict[str, float]:
        text = httpx.get(f"{simulator_url}/metrics").text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    label = f'{{model_name="{MODEL}"}}'
    before = scrape()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:inter_token_latency_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert name + label in before, name
    assert f'vllm:time_to_first_token_seconds_bucket{{model_name="{MODEL}",le="+Inf"}}' in before
    client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=7, stream=True).close()
    completion = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=7)
    after = scrape()
    assert after["vllm:generation_tokens_total" + label] >= before["vllm:generation_tokens_total" + label] + 7
    assert after["vllm:prompt_tokens_total" + label] >= (
        before["vllm:prompt_tokens_total" + label] + completion.usage.prompt_tokens
    )
    assert (
        after["vllm:e2e_request_latency_seconds_count" + label]
        > before["vllm:e2e_request_latency_seconds_count" + label]
    )
    assert 0.0 <= after["vllm:kv_cache_usage_perc" + label] <= 1.0


def _first_token_seconds(client: openai.OpenAI, messages: list[dict]) -> tuple[float, int]:
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=2, stream=True, stream_options={"include_usage": True}
    )
    first = None
    cached = 0
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - started
        if chunk.usage:
            cached = chunk.usage.prompt_tokens_details.cached_tokens
    return first, cached


def test_prefix_cache_makes_a_shared_prefix_answer_sooner():
    system = {"role": "system", "content": " ".join(f"rule{i} applies." for i in range(300))}
    with run_simulator(
        served_model_names=(MODEL,), ttft_ms=300, prefill_ms_per_1k_tokens=0, prefix_cache_speedup=0.9
    ) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        cold, cold_cached = _first_token_seconds(client, [system, {"role": "user", "content": "First question"}])
        warm, warm_cached = _first_token_seconds(client, [system, {"role": "user", "content": "Other question"}])
        hits = stats(base_url)["prefix_cache"]["hit_tokens"]
    assert cold_cached == 0 and cold >= 0.29
    assert warm_cached >= 896 and hits == warm_cached
    # 300 ms * (1 - 0.9 * ~0.98) is about 35 ms; leave room for a loaded machine.
    assert warm < 0.15 < cold


def test_no_prefix_cache_flag_disables_hits():
    system = {"role": "system", "content": "shared " * 200}
    with run_simulator(served_model_names=(MODEL,), ttft_ms=1, itl_ms=1, prefix_cache=False) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        _first_token_seconds(client, [system, {"role": "user", "content": "a"}])
        _, cached = _first_token_seconds(client, [system, {"role": "user", "content": "b"}])
    assert cached == 0


# ---------------------------------------------------------------- concurrency, faults, disconnects


@pytest.mark.asyncio
async def test_requests_beyond_max_num_seqs_wait():
    with run_simulator(served_model_names=(MODEL,), ttft_ms=50, itl_ms=20, max_num_seqs=2) as base_url:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

        async def one() -> int:
            completion = await client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=10)
            return completion.usage.completion_tokens

        tasks = [asyncio.create_task(one()) for _ in range(5)]
        async with httpx.AsyncClient() as http:
            seen = {"running": 0, "waiting": 0}
            deadline = time.monotonic() + 3
            while seen["waiting"] < 3 and time.monotonic() < deadline:
                current = (await http.get(f"{base_url}/_sim/stats")).json()
                seen = {"running": current["running"], "waiting": current["waiting"]}
                await asyncio.sleep(0.01)
            assert seen == {"running": 2, "waiting": 3}
            metrics = (await http.get(f"{base_url}/metrics")).text
            assert f'vllm:num_requests_waiting{{model_name="{MODEL}"}}' in metrics
            assert await asyncio.gather(*tasks) == [10] * 5
            assert (await http.get(f"{base_url}/_sim/stats")).json()["waiting"] == 0
        await client.close()


def test_failure_injection_can_be_switched_at_runtime():
    with run_simulator(served_model_names=(MODEL,), ttft_ms=1, itl_ms=1, failure_rate=1.0) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=3)
        response = httpx.post(f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": PROMPT})
        assert response.status_code == 500 and response.json()["error"]["type"] == "InternalServerError"

        assert patch_config(base_url, failure_rate=0.0).json()["failure_rate"] == 0.0
        assert client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=3).usage.completion_tokens == 3

        patch_config(base_url, failure_rate=1.0, fail_mode="hang")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": PROMPT}, timeout=0.3)

        patch_config(base_url, fail_mode="disconnect", disconnect_after_chunks=2)
        with pytest.raises(openai.APIConnectionError):
            list(client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=50, stream=True))
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=5)

        assert patch_config(base_url, failure_rate=2).status_code == 400
        assert patch_config(base_url, fail_mode="explode").status_code == 400
        assert patch_config(base_url, bogus=1).status_code == 400

        patch_config(base_url, unhealthy=True)
        assert httpx.get(f"{base_url}/health").status_code == 503
        patch_config(base_url, unhealthy=False, failure_rate=0.0)
        assert httpx.get(f"{base_url}/health").status_code == 200

        counts = stats(base_url)
        assert counts["injected_failures"] == {"error": 2, "hang": 1, "disconnect": 2}
        assert counts["status_counts"]["500"] == 2
        assert counts["running"] == 0


def test_client_disconnect_mid_stream_frees_the_slot():
    with run_simulator(served_model_names=(MODEL,), ttft_ms=5, itl_ms=20, max_num_seqs=1) as base_url:
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": 500, "stream": True}
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            for number, _ in enumerate(response.iter_lines()):
                if number >= 4:
                    break
        started = time.monotonic()
        completion = httpx.post(
            f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": PROMPT, "max_tokens": 3}
        ).json()
        # The abandoned stream had ~10 s left; the next request only waits for its own ~50 ms.
        assert time.monotonic() - started < 1.0
        assert completion["usage"]["completion_tokens"] == 3
        counts = stats(base_url)
        assert counts["requests_aborted"] == 1 and counts["running"] == 0
        assert counts["generation_tokens"] < 100
