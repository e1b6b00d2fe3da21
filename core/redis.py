"""The platform's Redis: one sync client per process and the key names every app shares the prefix of."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_client: redis.Redis | None = None
_lock = threading.Lock()


def key(*parts: object) -> str:
    """A platform key name: the configured prefix (``GATEWAY_REDIS_PREFIX``), then the parts joined by colons."""
    prefix: str = settings.GATEWAY_REDIS_PREFIX
    return prefix + ":".join(str(p) for p in parts)


def client() -> redis.Redis:
    """The process's sync redis-py client (created on first use, shared by threads)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
    return _client
