"""GATEWAY_TRANSPORT: parsed loudly, the live path logged once, the hot path's Redis client alike on both paths, and
a uvicorn whose response cycle changed shape served through plain ASGI send with one warning."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from gateway import transport as gateway_transport
from gateway.store import LuaScript, fredis, k, sredis
from gateway.transport import http, plain_http, uvicorn
from maas import env


def test_a_bad_transport_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("GATEWAY_TRANSPORT", "turbo")
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TRANSPORT: expected one of fast, plain, got 'turbo'"):
        env.choice("GATEWAY_TRANSPORT", "fast", gateway_transport.CHOICES)
    monkeypatch.setenv("GATEWAY_TRANSPORT", "Plain")
    assert env.choice("GATEWAY_TRANSPORT", "fast", gateway_transport.CHOICES) == "plain"


def test_the_setting_selects_the_clients_and_the_live_path_is_logged_once(settings, caplog, monkeypatch):
    assert gateway_transport.fast and gateway_transport.request is http.request  # the default
    settings.GATEWAY_TRANSPORT = "plain"
    assert not gateway_transport.fast and gateway_transport.request is plain_http.request
    monkeypatch.setattr(gateway_transport, "_announced", False)
    with caplog.at_level(logging.INFO, logger="gateway.transport"):
        gateway_transport.announce()
        gateway_transport.announce()
    assert [r.getMessage() for r in caplog.records] == ["gateway transport: plain (httpx, redis-py asyncio, ASGI send)"]
    settings.GATEWAY_TRANSPORT = "fast"
    monkeypatch.setattr(gateway_transport, "_announced", False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.transport"):
        gateway_transport.announce()
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("gateway transport: fast") and f"uvicorn {uvicorn.WRITTEN_AGAINST}" in message


@pytest.mark.asyncio
async def test_both_redis_clients_answer_raw_replies_and_load_scripts(transport):
    client = fredis()
    name = k("transport-test", transport)
    sredis().delete(name)
    script = LuaScript(f"-- {uuid.uuid4()}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")  # never loaded before
    try:
        assert await client.execute("SET", name, "1") == b"OK"
        assert await client.execute("MGET", name, k("transport-test", "none")) == [b"1", None]
        assert await script.acall([name], [4]) == 5  # NOSCRIPT, then loaded by EVAL
        assert await script.acall([name], [1], later=True) == 6
        with pytest.raises(redis.exceptions.ResponseError):
            await client.execute("INCRBY", name, "x")
    finally:
        sredis().delete(name)
        await client.close()


class _Flow:
    write_paused = False


def _cycle_type(**attributes):
    """A stand-in for uvicorn's RequestResponseCycle (same module name), with ``attributes`` only."""

    async def send(self, message):
        pass

    return type("RequestResponseCycle", (), {"__module__": uvicorn.CYCLE_MODULE, "send": send, **attributes})


def test_a_changed_uvicorn_cycle_falls_back_to_asgi_send_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(uvicorn, "_warned", False)
    whole = _cycle_type(chunked_encoding=True, response_complete=False, transport=object(), flow=_Flow())()
    assert uvicorn.direct_cycle(whole.send) is whole
    changed = _cycle_type(chunked_encoding=True, response_complete=False, transport=object())()  # no flow control
    with caplog.at_level(logging.WARNING, logger="gateway.transport.uvicorn"):
        assert uvicorn.direct_cycle(changed.send) is None
        assert uvicorn.direct_cycle(changed.send) is None
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING and "streams use plain ASGI send" in warning.getMessage()
    assert uvicorn.direct_cycle(print) is None  # not uvicorn's: plain ASGI send, nothing to warn about
