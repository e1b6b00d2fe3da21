"""Request validation for /v1 bodies: OpenAI's field names and types, answered with a precise 400."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.errors import invalid_request

_COMMON = {
    "model",
    "user",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "metadata",
    "store",
    "service_tier",
    # vLLM's sampling extras, sent by clients as extra_body
    "top_k",
    "min_p",
    "repetition_penalty",
    "length_penalty",
    "ignore_eos",
    "min_tokens",
    "stop_token_ids",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "truncate_prompt_tokens",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "guided_decoding_backend",
    "structured_outputs",
    "priority",
    "request_id",
    "allowed_token_ids",
    "bad_words",
    "prompt_logprobs",
    "response_format",
}
CHAT_FIELDS = _COMMON | {
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "reasoning_effort",
    "modalities",
    "prediction",
    "audio",
    "web_search_options",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "documents",
    "echo",
    "mm_processor_kwargs",
    "verbosity",
    "safety_identifier",
    "prompt_cache_key",
}
COMPLETION_FIELDS = _COMMON | {"prompt", "suffix", "echo", "best_of", "add_special_tokens"}
EMBEDDING_FIELDS = {
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "user",
    "truncate_prompt_tokens",
    "add_special_tokens",
    "priority",
}
FIELDS = {"chat.completions": CHAT_FIELDS, "completions": COMPLETION_FIELDS, "embeddings": EMBEDDING_FIELDS}
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# Recorded with the usage: what shapes the answer, never the prompt itself.
SAMPLING_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "response_format",
    "logprobs",
    "top_logprobs",
    "tool_choice",
    "encoding_format",
    "dimensions",
    "best_of",
    "echo",
)


@dataclass
class Parsed:
    model_id: str
    stream: bool
    client_usage: bool  # the client asked for stream_options.include_usage
    prompt_text: str  # the prompt's text, for affinity, hashing and estimates
    max_tokens: int | None
    n: int
    params: dict


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type_name(v) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def _number(body, name, lo, hi):
    v = body.get(name)
    if v is None:
        return
    if not _is_num(v):
        raise invalid_request(
            f"Invalid type for '{name}': expected a number, but got {_type_name(v)} instead.", name, "invalid_type"
        )
    if not lo <= v <= hi:
        raise invalid_request(
            f"Invalid '{name}': {v} is out of range; expected a value from {lo} to {hi}.", name, "invalid_value"
        )


def _integer(body, name, lo, hi=None):
    v = body.get(name)
    if v is None:
        return None
    if not _is_int(v):
        raise invalid_request(
            f"Invalid type for '{name}': expected an integer, but got {_type_name(v)} instead.", name, "invalid_type"
        )
    if v < lo or (hi is not None and v > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        raise invalid_request(f"Invalid '{name}': {v}; expected a value {bound}.", name, "invalid_value")
    return v


def _boolean(body, name):
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise invalid_request(
            f"Invalid type for '{name}': expected a boolean, but got {_type_name(v)} instead.", name, "invalid_type"
        )
    return v


def _typed(body, name, types, label):
    v = body.get(name)
    if v is not None and not isinstance(v, types):
        raise invalid_request(
            f"Invalid type for '{name}': expected {label}, but got {_type_name(v)} instead.", name, "invalid_type"
        )
    return v


def _content_text(content, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise invalid_request(
                    f"Invalid '{where}.content[{i}]': expected an object with a 'type'.", "messages", "invalid_type"
                )
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts)
    raise invalid_request(
        f"Invalid type for '{where}.content': expected a string or an array of content parts, "
        f"but got {_type_name(content)} instead.",
        "messages",
        "invalid_type",
    )


def _prompt_text(value, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            return "\n".join(value)
        if all(_is_int(x) for x in value):
            return " ".join(map(str, value))
        if all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in value):
            return "\n".join(" ".join(map(str, x)) for x in value)
    raise invalid_request(
        f"Invalid '{name}': expected a string, an array of strings, an array of token ids or an "
        f"array of token-id arrays (non-empty).",
        name,
        "invalid_type",
    )


def parse(endpoint: str, body) -> Parsed:
    """Check a decoded JSON body for ``endpoint``; raise GatewayError(400) naming the offending field."""
    if not isinstance(body, dict):
        raise invalid_request(f"The request body must be a JSON object, got {_type_name(body)}.", None, "invalid_body")
    unknown = sorted(set(body) - FIELDS[endpoint])
    if unknown:
        raise invalid_request(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    model = body.get("model")
    if model is None:
        raise invalid_request("You must provide a model parameter.", "model", "missing_required_parameter")
    if model == "":
        raise invalid_request("Invalid 'model': empty string. Expected a model id.", "model", "invalid_value")
    if not isinstance(model, str):
        raise invalid_request(
            f"Invalid type for 'model': expected a string, but got {_type_name(model)} instead.",
            "model",
            "invalid_type",
        )
    _typed(body, "user", str, "a string")
    _typed(body, "metadata", dict, "an object")
    if endpoint == "embeddings":
        if "input" not in body:
            raise invalid_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
        text = _prompt_text(body["input"], "input")
        if body.get("encoding_format") not in (None, "float", "base64"):
            raise invalid_request(
                "Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format", "invalid_value"
            )
        _integer(body, "dimensions", 1)
        return Parsed(model, False, False, text, None, 1, _params(body))
    stream = bool(_boolean(body, "stream"))
    options = _typed(body, "stream_options", dict, "an object")
    client_usage = False
    if options is not None:
        if not stream:
            raise invalid_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        client_usage = bool(_boolean(options, "include_usage"))
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _number(body, "repetition_penalty", 0, 10)
    _number(body, "min_p", 0, 1)
    _integer(body, "top_k", -1)
    _integer(body, "seed", -(1 << 63), (1 << 64) - 1)
    _integer(body, "min_tokens", 0)
    n = _integer(body, "n", 1, 128) or 1
    max_tokens = _integer(body, "max_tokens", 1)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 16 and all(isinstance(s, str) for s in stop))
    ):
        raise invalid_request(
            "Invalid 'stop': expected a string or an array of at most 16 strings.", "stop", "invalid_type"
        )
    _typed(body, "logit_bias", dict, "an object")
    _typed(body, "response_format", dict, "an object")
    _boolean(body, "ignore_eos")
    if endpoint == "chat.completions":
        max_tokens = _integer(body, "max_completion_tokens", 1) or max_tokens
        _boolean(body, "logprobs")
        _integer(body, "top_logprobs", 0, 20)
        _typed(body, "tools", list, "an array")
        _typed(body, "tool_choice", (str, dict), "a string or an object")
        messages = body.get("messages")
        if messages is None:
            raise invalid_request("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        if not isinstance(messages, list):
            raise invalid_request(
                f"Invalid type for 'messages': expected an array, but got {_type_name(messages)} instead.",
                "messages",
                "invalid_type",
            )
        if not messages:
            raise invalid_request(
                "Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages", "empty_array"
            )
        texts = []
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                raise invalid_request(
                    f"Invalid type for '{where}': expected an object, but got {_type_name(message)} instead.",
                    "messages",
                    "invalid_type",
                )
            role = message.get("role")
            if not isinstance(role, str) or role not in ROLES:  # an object or array is unhashable: a 400, not a 500
                raise invalid_request(
                    f"Invalid value for '{where}.role': expected one of {', '.join(sorted(ROLES))}.",
                    "messages",
                    "invalid_value",
                )
            texts.append(f"{role}: {_content_text(message.get('content'), where)}")
        text = "\n".join(texts)
    else:
        _integer(body, "logprobs", 0, 20)
        if "prompt" not in body:
            raise invalid_request("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        text = _prompt_text(body["prompt"], "prompt")
        _typed(body, "suffix", str, "a string")
        n = max(n, _integer(body, "best_of", 1, 128) or 1)
    return Parsed(model, stream, client_usage, text, max_tokens, n, _params(body))


def _params(body: dict) -> dict:
    return {name: body[name] for name in SAMPLING_PARAMS if name in body}


def estimate_prompt_tokens(text: str) -> int:
    """An upper-bound token estimate (≈ 2 characters per token, plus template overhead) for reservations."""
    return len(text) // 2 + 16


def typical_prompt_tokens(text: str) -> int:
    """A typical token count (≈ 4 characters per token), for aborted requests whose usage never arrived."""
    return max(1, (len(text) + 3) // 4)
