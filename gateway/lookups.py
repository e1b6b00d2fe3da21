"""Cached reads on the /v1 hot path: API keys, model targets (with prices), ready replicas, callable models.

Each worker keeps them in process memory, invalidated by two epochs in Redis that workers re-read (one MGET) in the
background every ``EPOCH_CHECK_SECONDS``; a request waits for that read only when it is older than
``EPOCH_MAX_AGE_SECONDS``. The auth epoch is bumped by a key revocation: every worker drops its cached keys within a
second (keys are otherwise refreshed in the background after ``KEY_TTL``; expiry is checked on every use). The
serving epoch is bumped (``core.signals.serving_changed``) whenever a service, replica, cluster or catalog model is
written: model targets, replica lists and model lists are then refreshed in the background (the previous answer is
served meanwhile; the router's retries and circuit breaker cover a replica that just went away; cached "no such
model" answers are dropped at once). Their TTLs only back up writes that send no signal. A model target carries its
token price history (``billing.selectors.token_price_histories``: the prices in force since ``PRICE_LOOKBACK`` before
the load and any later ones, so a price scheduled ahead applies from its start with no refresh); a new price bumps
the serving epoch too, so the request path never queries a price.

Refreshing on change instead of every second matters for latency, not only for the database: a refresh runs the ORM
in a thread, and while it holds the GIL every stream of the worker waits (bench/README.md, Gateway).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.db import close_old_connections

from billing.pricing import PriceHistory, TokenRates
from gateway.admission import to_micro
from gateway.store import fredis, k, sredis

logger = logging.getLogger(__name__)

KEY_TTL = 60.0
KEY_NEGATIVE_TTL = 2.0
EPOCH_CHECK_SECONDS = 0.25
EPOCH_MAX_AGE_SECONDS = 0.75
TARGET_TTL = 30.0
ENDPOINTS_TTL = 30.0
MODELS_TTL = 30.0
RETRY_SECONDS = 1.0  # a failed background refresh is retried this soon (the previous answer is served meanwhile)
# A target keeps the prices in force this long before it was loaded, for requests that started before the load.
PRICE_LOOKBACK = timedelta(hours=1)


@dataclass(frozen=True)
class OrgInfo:
    id: str
    namespace: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    org: OrgInfo
    prefix: str
    expires_at: datetime | None
    revoked: bool
    rpm_limit: int | None
    tpm_limit: int | None
    allowed_models: frozenset
    spend_cap_micro: int | None
    spend_cap_period: str

    def active(self, now_ts: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at.timestamp() > now_ts)


@dataclass(frozen=True)
class Target:
    """A resolved model plus what the gateway needs to price it."""

    model_id: str
    public: bool
    service_ids: tuple
    upstream_model: str
    catalog_model_id: int
    context_length: int
    kind: str  # catalog.models.ModelKind: chat (chat and text completions) or embedding
    prices: PriceHistory | None  # per-token prices of public models; dedicated services are billed per instance-hour
    # The autoscaling service a request waits for when no replica is ready (gateway.waking), and for how long.
    wake_service_id: str | None = None
    max_wake_wait_s: int = 0

    def price_at(self, started_at: float) -> TokenRates | None:
        """The price in force when a request started (a ``time.time()``), as billing will charge it."""
        if self.prices is None:
            return None
        if len(self.prices.rates) == 1:
            return self.prices.rates[0]
        return self.prices.at(datetime.fromtimestamp(started_at, tz=UTC))  # as metering stores started_at


def org_info(org) -> OrgInfo:
    return OrgInfo(id=str(org.pk), namespace=org.namespace)


def _db(fn):
    """Run an ORM read in a worker thread, recycling a connection that aged out or broke."""

    def wrapper(*args):
        close_old_connections()
        return fn(*args)

    return sync_to_async(wrapper, thread_sensitive=False)


def key_info_from_row(key, org=None) -> KeyInfo:
    """The cached form of an ApiKey row; pass ``org`` when the row's org is not loaded (async callers)."""
    return KeyInfo(
        id=str(key.pk),
        org=org_info(org if org is not None else key.org),
        prefix=key.prefix,
        expires_at=key.expires_at,
        revoked=key.revoked_at is not None,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        allowed_models=frozenset(key.allowed_models or ()),
        spend_cap_micro=to_micro(key.spend_cap) if key.spend_cap is not None else None,
        spend_cap_period=key.spend_cap_period or "monthly",
    )


def _load_key(key_hash: str) -> KeyInfo | None:
    from tenancy.models import ApiKey

    key = ApiKey.objects.select_related("org").filter(key_hash=key_hash).first()
    return None if key is None else key_info_from_row(key)


def _load_target(model_id: str, org_id: str | None, namespace: str | None) -> Target | None:
    from billing.selectors import token_price_history
    from deployments.selectors import resolve_model_target
    from tenancy.models import Organization

    org = Organization(pk=org_id, namespace=namespace or "") if org_id else None
    target = resolve_model_target(model_id, org)
    if target is None:
        return None
    prices = None
    if target.public:
        since = datetime.now(tz=UTC) - PRICE_LOOKBACK
        prices = token_price_history(target.catalog_model_id, since=since)
    return Target(
        model_id=target.model_id,
        public=target.public,
        service_ids=tuple(target.service_ids),
        upstream_model=target.upstream_model,
        catalog_model_id=target.catalog_model_id,
        context_length=target.context_length,
        kind=target.kind,
        prices=prices,
        wake_service_id=target.wake_service_id,
        max_wake_wait_s=target.max_wake_wait_s,
    )


def _load_endpoints(service_ids: tuple) -> list:
    from deployments.selectors import ready_endpoints

    return ready_endpoints(service_ids)


def _load_models(org_id: str | None, namespace: str | None) -> list[dict]:
    from deployments.selectors import callable_models
    from tenancy.models import Organization

    org = Organization(pk=org_id, namespace=namespace or "") if org_id else None
    return callable_models(org)


class _Entry:
    __slots__ = ("value", "fresh_until", "refreshing")

    def __init__(self, value, fresh_until: float):
        self.value = value
        self.fresh_until = fresh_until
        self.refreshing = False


class TTLCache:
    """In-process cache with single-flight loads and (optionally) stale-while-revalidate."""

    def __init__(
        self, loader, ttl: float, *, negative_ttl: float | None = None, stale: bool = True, max_entries: int = 50_000
    ):
        self.loader = _db(loader)
        self.ttl = ttl
        self.negative_ttl = ttl if negative_ttl is None else negative_ttl
        self.stale = stale
        self.max_entries = max_entries
        self.entries: dict = {}
        self.inflight: dict = {}

    def clear(self) -> None:
        self.entries.clear()

    def invalidate(self) -> None:
        """Everything is refreshed on next use: values in the background (served meanwhile), absences at once."""
        for key, entry in list(self.entries.items()):
            if entry.value is None or not self.stale:
                self.entries.pop(key, None)
            else:
                entry.fresh_until = 0.0

    def _store(self, key, value) -> None:
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        ttl = self.ttl if value is not None else self.negative_ttl
        self.entries[key] = _Entry(value, time.monotonic() + ttl)

    async def _load(self, key):
        value = await self.loader(*key)
        self._store(key, value)
        return value

    async def reload(self, *key):
        """Load ``key`` now, whatever the cache holds (a waiter that cannot wait for the next refresh)."""
        return await self._load(key)

    async def _refresh(self, key, entry: _Entry) -> None:
        try:
            await self._load(key)
        except Exception:  # keep serving the stale value; try again soon
            entry.fresh_until = time.monotonic() + min(self.ttl, RETRY_SECONDS)
        finally:
            entry.refreshing = False

    def _loaded(self, key: tuple[Any, ...], task: asyncio.Future[Any]) -> None:
        if self.inflight.get(key) is task:
            self.inflight.pop(key, None)

    async def get(self, *key):
        entry = self.entries.get(key)
        if entry is not None:
            if time.monotonic() < entry.fresh_until:
                return entry.value
            if self.stale and entry.value is not None:
                if not entry.refreshing:
                    entry.refreshing = True
                    asyncio.ensure_future(self._refresh(key, entry))
                return entry.value
        task = self.inflight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._load(key))
            self.inflight[key] = task
            task.add_done_callback(functools.partial(self._loaded, key))
        return await asyncio.shield(task)


keys = TTLCache(_load_key, KEY_TTL, negative_ttl=KEY_NEGATIVE_TTL)
targets = TTLCache(_load_target, TARGET_TTL, negative_ttl=1.0)
endpoints = TTLCache(_load_endpoints, ENDPOINTS_TTL)
models = TTLCache(_load_models, MODELS_TTL)

_epoch: dict[str, Any] = {"auth": None, "serving": None, "read_at": float("-inf"), "task": None}


def epoch_key() -> str:
    return k("auth-epoch")


def serving_epoch_key() -> str:
    return k("serving-epoch")


async def _read_epoch() -> None:
    started = time.monotonic()
    auth, serving = await fredis().execute("MGET", epoch_key(), serving_epoch_key())
    if auth != _epoch["auth"]:
        if _epoch["auth"] is not None or auth is not None:
            keys.clear()
        _epoch["auth"] = auth
    if serving != _epoch["serving"]:
        if _epoch["serving"] is not None or serving is not None:
            for cache in (targets, endpoints, models):
                cache.invalidate()
        _epoch["serving"] = serving
    _epoch["read_at"] = max(_epoch["read_at"], started)


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # a failed background read is retried by the next request


async def _check_epoch() -> None:
    """Keep the epochs fresh without a Redis round trip on most requests.

    Older than ``EPOCH_CHECK_SECONDS``, it is re-read in the background; older than ``EPOCH_MAX_AGE_SECONDS``, the
    request waits for the read. A key revoked at T is therefore refused from T + EPOCH_MAX_AGE_SECONDS on: the
    cache answers only while the last read was sent less than that long ago, and a read sent after T sees the bump.
    """
    age = time.monotonic() - _epoch["read_at"]
    if age < EPOCH_CHECK_SECONDS:
        return
    task = _epoch["task"]
    if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
        task = _epoch["task"] = asyncio.ensure_future(_read_epoch())
        task.add_done_callback(_retrieve)
    if age >= EPOCH_MAX_AGE_SECONDS:
        await asyncio.shield(task)


async def check_epochs() -> None:
    """Re-read the epochs if they are older than ``EPOCH_CHECK_SECONDS`` (for a task that waits on a change)."""
    await _check_epoch()


async def key_for(key_hash: str) -> KeyInfo | None:
    await _check_epoch()
    return await keys.get(key_hash)


def _bump(key: str, what: str) -> None:
    try:
        sredis().incr(key)
    except redis.exceptions.RedisError as exc:  # the write itself is committed; the caches' TTLs catch up
        logger.error("could not bump the %s epoch (gateway caches refresh by TTL only): %r", what, exc)


def bump_auth_epoch(**_kwargs) -> None:
    """Receiver of core.signals.apikey_revoked: every worker drops its cached keys within a second."""
    _bump(epoch_key(), "auth")


def bump_serving_epoch(**_kwargs) -> None:
    """Receiver of core.signals.serving_changed: every worker refreshes targets, replicas and model lists."""
    _bump(serving_epoch_key(), "serving")


async def target_for(model_id: str, org: OrgInfo | None) -> Target | None:
    await _check_epoch()
    return await targets.get(model_id, org.id if org else None, org.namespace if org else None)


async def endpoints_for(service_ids: tuple) -> list:
    return await endpoints.get(tuple(service_ids))


async def models_for(org: OrgInfo | None) -> list[dict]:
    await _check_epoch()
    return await models.get(org.id if org else None, org.namespace if org else None)
