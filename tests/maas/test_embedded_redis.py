"""The embedded Redis of `./dev up` keeps an append-only file: usage records queued in its stream survive a crash."""

import os
import signal
import time

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from maas import embedded


@pytest.fixture
def redis_root(tmp_path):
    yield tmp_path
    embedded.stop(tmp_path)


def _kill(root) -> None:
    pid = int((root / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while embedded._pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_the_platforms_embedded_redis_runs_with_an_append_only_file(redis_root, monkeypatch):
    monkeypatch.delenv("REDIS_APPENDFSYNC", raising=False)
    url = embedded.start_redis(redis_root, appendfsync=embedded.redis_appendfsync())

    with redis.Redis.from_url(url) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("dir")["dir"] == str(redis_root / "redis")


def test_a_usage_entry_survives_a_killed_embedded_redis(redis_root, monkeypatch):
    monkeypatch.setenv("REDIS_APPENDFSYNC", "always")
    url = embedded.start_redis(redis_root, appendfsync=embedded.redis_appendfsync())
    with redis.Redis.from_url(url) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        entry = client.xadd("maas:usage", {"r": b'{"id": "1"}'})
    _kill(redis_root)

    url = embedded.start_redis(redis_root, appendfsync="always")  # what the next `./dev up` does
    with redis.Redis.from_url(url) as client:
        assert [e[0] for e in client.xrange("maas:usage")] == [entry]


def test_a_running_redis_without_persistence_is_switched_to_the_append_only_file(redis_root):
    embedded.start_redis(redis_root, appendfsync=None)  # started by an older checkout, or by the test plugin
    url = embedded.start_redis(redis_root, appendfsync="everysec")
    with redis.Redis.from_url(url) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}


def test_a_bad_appendfsync_fails_naming_the_variable(monkeypatch):
    monkeypatch.setenv("REDIS_APPENDFSYNC", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="REDIS_APPENDFSYNC"):
        embedded.redis_appendfsync()
