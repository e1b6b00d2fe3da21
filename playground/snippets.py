""" "View code": the current conversation as a curl, Python (openai SDK) and JavaScript request to /v1."""

from __future__ import annotations

import json
import pprint

from django.conf import settings

KEY_PLACEHOLDER = "$MAAS_API_KEY"
PY_KEY_PLACEHOLDER = 'os.environ["MAAS_API_KEY"]'
JS_KEY_PLACEHOLDER = "process.env.MAAS_API_KEY"


def api_base_url() -> str:
    return settings.SITE_URL + "/v1"


def request_body(*, model_id: str, messages: list[dict], params: dict) -> dict:
    """The chat completion request the playground sends for this conversation, as a /v1 client would."""
    body: dict = {"model": model_id, "messages": messages}
    body.update(params)
    body["stream"] = True
    return body


def _py_literal(value, indent: int) -> str:
    """A Python literal for JSON-like data, continuation lines indented to sit inside the call."""
    return pprint.pformat(value, width=100 - indent, sort_dicts=False).replace("\n", "\n" + " " * indent)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def curl_snippet(body: dict) -> str:
    payload = json.dumps(body, ensure_ascii=False, indent=2)
    return (
        f"curl {api_base_url()}/chat/completions \\\n"
        f'  -H "Authorization: Bearer {KEY_PLACEHOLDER}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {_shell_quote(payload)}"
    )


def python_snippet(body: dict) -> str:
    params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    lines = [
        "import os",
        "",
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{api_base_url()}", api_key={PY_KEY_PLACEHOLDER})',
        "",
        "stream = client.chat.completions.create(",
        f"    model={body['model']!r},",
        f"    messages={_py_literal(body['messages'], 4)},",
    ]
    lines += [f"    {name}={_py_literal(value, 4)}," for name, value in params.items()]
    lines += [
        "    stream=True,",
        ")",
        "for chunk in stream:",
        "    if chunk.choices and chunk.choices[0].delta.content:",
        '        print(chunk.choices[0].delta.content, end="", flush=True)',
        "print()",
    ]
    return "\n".join(lines)


def javascript_snippet(body: dict) -> str:
    params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    pad = "\n  "
    lines = [
        'import OpenAI from "openai";',
        "",
        f'const client = new OpenAI({{ baseURL: "{api_base_url()}", apiKey: {JS_KEY_PLACEHOLDER} }});',
        "",
        "const stream = await client.chat.completions.create({",
        f"  model: {json.dumps(body['model'], ensure_ascii=False)},",
        "  messages: " + json.dumps(body["messages"], ensure_ascii=False, indent=2).replace("\n", pad) + ",",
    ]
    lines += [f"  {name}: {json.dumps(value)}," for name, value in params.items()]
    lines += [
        "  stream: true,",
        "});",
        "for await (const chunk of stream) {",
        '  process.stdout.write(chunk.choices[0]?.delta?.content || "");',
        "}",
    ]
    return "\n".join(lines)


def conversation_snippets(*, model_id: str, messages: list[dict], params: dict) -> dict[str, str]:
    body = request_body(model_id=model_id, messages=messages, params=params)
    return {"curl": curl_snippet(body), "python": python_snippet(body), "javascript": javascript_snippet(body)}
