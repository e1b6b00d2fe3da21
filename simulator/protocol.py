"""OpenAI request validation and the deterministic plan of what a request will generate.

Everything a response contains is decided here, before any latency is simulated, so streaming and non-streaming
answers to the same request are identical and the hot streaming loop only writes pre-computed bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .config import SimulatorConfig
from .prefix_cache import block_hashes
from .text import (
    GENERATION_PROMPT,
    IM_END,
    IM_START,
    apply_stop,
    generate_pieces,
    natural_length,
    stable_hash,
    tokenize,
)

ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
CHAT_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
MAX_N = 16
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for the legacy completions API
_MASK64 = (1 << 64) - 1


class APIError(Exception):
    """An error answered in OpenAI's shape, carrying vLLM's type names."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "InternalServerError"),
                "param": self.param,
                "code": self.status,
            }
        }


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


@dataclass(slots=True)
class Choice:
    index: int
    pieces: list[str]
    finish_reason: str
    stop_reason: str | None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class GenerationPlan:
    kind: str  # "chat" or "completion"
    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    sequence_tokens: list[int]  # prompt tokens per prompt (completions accept a batch)
    sequence_blocks: list[list[int]]  # prefix-cache block hashes per prompt
    choices: list[Choice]

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.pieces) for c in self.choices)

    @property
    def max_steps(self) -> int:
        return max((len(c.pieces) for c in self.choices), default=0)


@dataclass(slots=True)
class EmbeddingPlan:
    model: str
    seeds: list[int]
    prompt_tokens: int
    encoding_format: str
    dimensions: int


# ---------------------------------------------------------------- field validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _opt_number(body: dict, name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value):
        raise bad_request(f"'{name}' must be a number, got {type(value).__name__}", name)
    if not lo <= value <= hi:
        raise bad_request(f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return float(value)


def _opt_int(body: dict, name: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise bad_request(f"'{name}' must be an integer, got {type(value).__name__}", name)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise bad_request(f"'{name}' must be {bound}, got {value}", name)
    return value


def _opt_bool(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be a boolean, got {type(value).__name__}", name)
    return value


def _opt_str(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string, got {type(value).__name__}", name)
    return value


def _check_model(body: dict, config: SimulatorConfig) -> str:
    model = body.get("model")
    if model is None:
        raise bad_request("'model' is required", "model")
    if not isinstance(model, str):
        raise bad_request(f"'model' must be a string, got {type(model).__name__}", "model")
    if model not in config.served_model_names:
        raise APIError(404, f"The model `{model}` does not exist.", param="model")
    return model


def _check_sampling(body: dict) -> None:
    _opt_number(body, "temperature", 0.0, 2.0)
    top_p = _opt_number(body, "top_p", 0.0, 1.0)
    if top_p is not None and top_p <= 0.0:
        raise bad_request("'top_p' must be in (0, 1], got 0", "top_p")
    _opt_number(body, "presence_penalty", -2.0, 2.0)
    _opt_number(body, "frequency_penalty", -2.0, 2.0)
    _opt_number(body, "repetition_penalty", 1e-6, 10.0)
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or (top_k < 1 and top_k not in (0, -1))):
        raise bad_request("'top_k' must be -1, 0 or a positive integer", "top_k")
    _opt_int(body, "seed", -(1 << 63), (1 << 64) - 1)
    _opt_str(body, "user")
    logit_bias = body.get("logit_bias")
    if logit_bias is not None and not isinstance(logit_bias, dict):
        raise bad_request("'logit_bias' must be an object", "logit_bias")
    if body.get("logprobs"):
        if not isinstance(body["logprobs"], (bool, int)):
            raise bad_request("'logprobs' has the wrong type", "logprobs")
        raise bad_request("logprobs are not supported by the engine simulator", "logprobs")
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or not isinstance(response_format.get("type"), str):
            raise bad_request("'response_format' must be an object with a 'type'", "response_format")
        if response_format["type"] != "text":
            raise bad_request(
                "the engine simulator only produces plain text (response_format type 'text')", "response_format"
            )


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise bad_request("'stop' must be a string or a list of strings", "stop")


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = bool(_opt_bool(body, "stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object", "stream_options")
        if not stream:
            raise bad_request("Stream options can only be defined when `stream=True`.", "stream_options")
        include_usage = bool(_opt_bool(options, "include_usage"))
        if _opt_bool(options, "continuous_usage_stats"):
            raise bad_request("continuous_usage_stats is not supported by the engine simulator", "stream_options")
    return stream, include_usage


def _length_error(config: SimulatorConfig, prompt_tokens: int, max_tokens: int | None, where: str) -> APIError:
    limit = config.max_model_len
    if max_tokens is None:
        return bad_request(
            f"This model's maximum context length is {limit} tokens. However, your request has {prompt_tokens} "
            f"input tokens. Please reduce the length of the input {where}.",
            "messages" if where == "messages" else "prompt",
        )
    return bad_request(
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in the completion). "
        f"Please reduce the length of the {where} or completion.",
        "max_tokens",
    )


def _plan_choices(
    *,
    config: SimulatorConfig,
    body: dict,
    base_seed: int,
    first_index: int,
    n: int,
    prompt_tokens: int,
    max_tokens: int | None,
    default_max_tokens: int | None,
    stops: list[str],
    where: str,
) -> list[Choice]:
    room = config.max_model_len - prompt_tokens
    if room <= 0:
        raise _length_error(config, prompt_tokens, max_tokens, where)
    if max_tokens is not None and max_tokens > room:
        raise _length_error(config, prompt_tokens, max_tokens, where)
    limit = max_tokens if max_tokens is not None else min(default_max_tokens or room, room)
    ignore_eos = bool(_opt_bool(body, "ignore_eos"))
    min_tokens = _opt_int(body, "min_tokens", 0) or 0
    include_stop = bool(_opt_bool(body, "include_stop_str_in_output"))
    choices = []
    for i in range(n):
        seed = (base_seed ^ ((i + 1) * 0x9E3779B97F4A7C15)) & _MASK64
        wanted = limit if ignore_eos else max(natural_length(seed), min_tokens)
        count = min(wanted, limit)
        finish = "length" if ignore_eos or wanted > limit else "stop"
        pieces = generate_pieces(seed, count)
        pieces, stop_reason = apply_stop(pieces, stops, include_stop)
        if stop_reason is not None:
            finish = "stop"
        choices.append(Choice(first_index + i, pieces, finish, stop_reason))
    return choices


# ---------------------------------------------------------------- chat


def _content_tokens(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return tokenize(content)
    if isinstance(content, list):
        tokens: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}: the engine simulator accepts only text content parts", "messages")
            tokens.extend(tokenize(part["text"]))
        return tokens
    raise bad_request(f"{where}: 'content' must be a string or a list of content parts", "messages")


def chat_prompt_tokens(messages: Any, tools: Any = None) -> list[str]:
    """The prompt as the model would see it after the chat template, as a token list."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", "messages")
    tokens: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be a list", "tools")
        tokens.extend(tokenize(json.dumps(tools, sort_keys=True)))
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", "messages")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise bad_request(f"{where}: 'role' must be one of {', '.join(sorted(CHAT_ROLES))}", "messages")
        tokens.append(IM_START)
        tokens.append(role)
        tokens.append("\n")
        content = message.get("content")
        if content is None:
            if role not in ("assistant", "tool", "function"):
                raise bad_request(f"{where}: 'content' is required for role '{role}'", "messages")
        else:
            tokens.extend(_content_tokens(content, where))
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                raise bad_request(f"{where}: 'tool_calls' must be a list", "messages")
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    raise bad_request(f"{where}: each tool call needs a 'function' object", "messages")
                tokens.extend(tokenize(str(function.get("name", ""))))
                tokens.extend(tokenize(str(function.get("arguments", ""))))
        tokens.append(IM_END)
        tokens.append("\n")
    tokens.extend(GENERATION_PROMPT)
    return tokens


def plan_chat(body: Any, config: SimulatorConfig) -> GenerationPlan:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = _check_model(body, config)
    if "messages" not in body:
        raise bad_request("'messages' is required", "messages")
    tokens = chat_prompt_tokens(body["messages"], body.get("tools"))
    _check_sampling(body)
    stream, include_usage = _stream_flags(body)
    n = _opt_int(body, "n", 1, MAX_N) or 1
    max_tokens = _opt_int(body, "max_completion_tokens", 1)
    legacy_max = _opt_int(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = legacy_max
    stops = _stops(body)
    request_seed = body.get("seed")
    base_seed = stable_hash(config.seed, "" if request_seed is None else request_seed, "\x1e".join(tokens))
    choices = _plan_choices(
        config=config,
        body=body,
        base_seed=base_seed,
        first_index=0,
        n=n,
        prompt_tokens=len(tokens),
        max_tokens=max_tokens,
        default_max_tokens=None,
        stops=stops,
        where="messages",
    )
    return GenerationPlan(
        kind="chat",
        model=model,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=len(tokens),
        sequence_tokens=[len(tokens)],
        sequence_blocks=[block_hashes(tokens, config.block_size)],
        choices=choices,
    )


# ---------------------------------------------------------------- completions


def _token_ids(value: list, param: str) -> list[str]:
    if not all(_is_int(t) and t >= 0 for t in value):
        raise bad_request(f"'{param}' token ids must be non-negative integers", param)
    return [str(t) for t in value]


def _prompt_token_lists(prompt: Any, param: str = "prompt") -> list[list[str]]:
    if isinstance(prompt, str):
        return [tokenize(prompt)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [tokenize(p) for p in prompt]
        if all(_is_int(p) for p in prompt):
            return [_token_ids(prompt, param)]
        if all(isinstance(p, list) and p for p in prompt):
            return [_token_ids(p, param) for p in prompt]
    raise bad_request(
        f"'{param}' must be a string, a list of strings, a list of token ids or a list of token id lists", param
    )


def plan_completion(body: Any, config: SimulatorConfig) -> GenerationPlan:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = _check_model(body, config)
    if "prompt" not in body:
        raise bad_request("'prompt' is required", "prompt")
    prompts = _prompt_token_lists(body["prompt"])
    _check_sampling(body)
    stream, include_usage = _stream_flags(body)
    if _opt_bool(body, "echo"):
        raise bad_request("echo is not supported by the engine simulator", "echo")
    best_of = _opt_int(body, "best_of", 1)
    n = _opt_int(body, "n", 1, MAX_N) or 1
    if best_of is not None and best_of != n:
        raise bad_request("best_of must equal n in the engine simulator", "best_of")
    if len(prompts) * n > MAX_N * 8:
        raise bad_request(f"at most {MAX_N * 8} completions per request", "prompt")
    _opt_str(body, "suffix")
    max_tokens = _opt_int(body, "max_tokens", 1)
    stops = _stops(body)
    request_seed = body.get("seed")
    choices: list[Choice] = []
    for position, tokens in enumerate(prompts):
        base_seed = stable_hash(
            config.seed, "" if request_seed is None else request_seed, "completion", "\x1e".join(tokens)
        )
        choices.extend(
            _plan_choices(
                config=config,
                body=body,
                base_seed=base_seed,
                first_index=position * n,
                n=n,
                prompt_tokens=len(tokens),
                max_tokens=max_tokens,
                default_max_tokens=COMPLETION_DEFAULT_MAX_TOKENS,
                stops=stops,
                where="prompt",
            )
        )
    return GenerationPlan(
        kind="completion",
        model=model,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=sum(len(t) for t in prompts),
        sequence_tokens=[len(t) for t in prompts],
        sequence_blocks=[block_hashes(t, config.block_size) for t in prompts],
        choices=choices,
    )


# ---------------------------------------------------------------- embeddings


def plan_embedding(body: Any, config: SimulatorConfig) -> EmbeddingPlan:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = _check_model(body, config)
    if "input" not in body:
        raise bad_request("'input' is required", "input")
    inputs = _prompt_token_lists(body["input"], "input")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = _opt_int(body, "dimensions", 1, config.embedding_dim) or config.embedding_dim
    _opt_str(body, "user")
    for tokens in inputs:
        if len(tokens) > config.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {config.max_model_len} tokens. However, you requested "
                f"{len(tokens)} tokens in the input for embedding generation. Please reduce the length of the input.",
                "input",
            )
    seeds = [stable_hash(config.seed, "embedding", "\x1e".join(tokens)) for tokens in inputs]
    return EmbeddingPlan(
        model=model,
        seeds=seeds,
        prompt_tokens=sum(len(t) for t in inputs),
        encoding_format=encoding_format,
        dimensions=dimensions,
    )
