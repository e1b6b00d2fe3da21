"""'View code' snippets: runnable requests against the platform's /v1 with the conversation in them."""

import ast
import json

from django.test import override_settings

from playground.snippets import conversation_snippets

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": 'It\'s "quoted": true'},
    {"role": "assistant", "content": "OK"},
    {"role": "user", "content": "和中文"},
]
PARAMS = {"temperature": 0.3, "max_tokens": 64}


@override_settings(SITE_URL="https://maas.example.cn")
def test_curl_posts_the_conversation_to_the_platform_base_url():
    curl = conversation_snippets(model_id="public/qwen2-0.5b-instruct", messages=MESSAGES, params=PARAMS)["curl"]
    assert curl.startswith("curl https://maas.example.cn/v1/chat/completions")
    assert "Authorization: Bearer $MAAS_API_KEY" in curl
    payload = curl.split("-d '", 1)[1].rsplit("'", 1)[0].replace("'\"'\"'", "'")
    body = json.loads(payload)
    assert body["model"] == "public/qwen2-0.5b-instruct"
    assert body["messages"] == MESSAGES
    assert body["temperature"] == 0.3 and body["max_tokens"] == 64 and body["stream"] is True


@override_settings(SITE_URL="https://maas.example.cn")
def test_python_snippet_is_valid_python_with_the_same_messages():
    code = conversation_snippets(model_id="acme/my-llama", messages=MESSAGES, params=PARAMS)["python"]
    tree = ast.parse(code)
    assert 'base_url="https://maas.example.cn/v1"' in code
    assert 'api_key=os.environ["MAAS_API_KEY"]' in code
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "create")
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kwargs == {
        "model": "acme/my-llama",
        "messages": MESSAGES,
        "temperature": 0.3,
        "max_tokens": 64,
        "stream": True,
    }


@override_settings(SITE_URL="https://maas.example.cn")
def test_javascript_snippet_uses_the_openai_sdk():
    js = conversation_snippets(model_id="acme/my-llama", messages=MESSAGES, params=PARAMS)["javascript"]
    assert 'import OpenAI from "openai";' in js
    assert 'baseURL: "https://maas.example.cn/v1"' in js and "apiKey: process.env.MAAS_API_KEY" in js
    assert '"和中文"' in js and "temperature: 0.3" in js
