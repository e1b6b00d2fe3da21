"""Open requests: what a gateway worker is serving now, so that a worker that dies mid-request is still billed.

At admission the gateway writes an *open marker* per request, in the round trip that takes its reservation (the
admission script; a stream reserved from a balance slice, which has no round trip, sends it with its first progress
write, not waited on; a non-streamed slice request has none: it relays nothing to bill before it ends, and its hold
is the slice's, released whole with a dead worker). Settlement removes it in its own round trip. Layout, per gateway
worker (one event loop) ``w``:

- ``open-requests:<w>``, a hash: ``<request id>`` → the marker (JSON: the usage record's fields known at admission,
  the prompt's estimate and ``h``, how the reservation is held: ``[balance mode, slice id, cap held, period ttl]``);
  ``<request id>:k`` → the reservation's key names (the balance, the org's hold triple, the key's spend and hold
  triple, space-separated); ``<request id>:p`` → progress, written while a stream is relayed: JSON with ``t``, the
  completion tokens to bill if the worker dies now, ``cost`` (the price in force when the request started applied
  to the prompt estimate and ``t``), ``r`` the replica, ``ttft`` and ``at``.
  ``slice:<id>`` → the key names (held, holds, deadlines) of a balance slice the worker holds (released whole when
  the worker is found dead: none of its requests can use it any more).
  ``sig:<service id>`` → how many of the service's in-flight requests (``deployments.serving_signals``) this worker
  counted and has not taken back (``gateway.serving``); subtracted from the service's count when the worker is found
  dead, so ``inflight`` returns to the truth;
- ``held:<service id>`` → likewise for the requests it holds while the service wakes (``gateway.waking``).
- ``open-workers``, a sorted set: worker → its last heartbeat (``time.time()``, every third of the grace).
- ``open-deadlines``, a sorted set: ``<open-requests key> <request id>`` → when the reservation expires.
- ``open-swept``, a sorted set: request id → when the sweeper settled it. A settlement that finds its marker gone
  and the id here does nothing: the sweeper billed the request already.

:func:`open_requests_sweep` (beat, ``USAGE_SWEEP_SECONDS``) settles the markers of workers whose heartbeat is older
than ``USAGE_OPEN_GRACE_SECONDS`` (the process was killed) and any marker past its deadline. What it bills: a
stream that relayed tokens pays the prompt's estimate plus ``t``, the tokens relayed when progress was last
written plus ``GATEWAY_PROGRESS_TOKENS`` (what the worker may have relayed since; never more than the request's
reserved completion), so at least what the client received and at most the marker interval more; a request that
relayed nothing (no progress, e.g. not streamed) pays nothing. The record (status ``aborted``, error code
``gateway_worker_lost``) is appended to the usage stream and the reservation released in one script that claims the
marker, so a late settlement by a living worker and the sweeper never both count a request; ingestion is idempotent
by request id besides. A dead worker's balance slice is released whole (no request of it can use it any more).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import orjson
from django.conf import settings

from core.redis import client as sredis
from core.redis import key as k
from deployments import serving_signals
from metering.ingestion import stream_key

logger = logging.getLogger(__name__)

SIGNAL_FIELD_PREFIX = "sig:"  # a worker's count of a service's in-flight requests, in its open-requests hash
HELD_FIELD_PREFIX = "held:"  # ...and of its requests held while the service wakes (``gateway.waking``)
SWEPT_KEEP_SECONDS = 86400  # a settlement arriving later than this after its sweep is not expected
LOST = "gateway_worker_lost"


def workers_key() -> str:
    return k("open-workers")


def open_key(worker: str) -> str:
    return k("open-requests", worker)


def deadlines_key() -> str:
    return k("open-deadlines")


def swept_key() -> str:
    return k("open-swept")


# The settlement's claim: the marker is removed, the reservation released and the usage record appended at once, or
# nothing happens (settled meanwhile: 0; progressed since it was read: -1, read it again).
_CLAIM = """
local open_requests, open_deadlines, open_swept, usage_stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local balance, held, holds, hold_deadlines = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local key_spent, key_held, key_holds, key_hold_deadlines = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local rid, expected, record, cost = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local balance_mode, slice_id, cap, period_ttl, dead, now = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if redis.call('HEXISTS', open_requests, rid) == 0 then return 0 end
if (redis.call('HGET', open_requests, rid .. ':p') or '') ~= expected then return -1 end
redis.call('HDEL', open_requests, rid, rid .. ':k', rid .. ':p')
redis.call('ZREM', open_deadlines, open_requests .. ' ' .. rid)
redis.call('ZADD', open_swept, now, rid)
local function unhold(held_key, holds_key, deadlines_key, id)
  local amount = redis.call('HGET', holds_key, id)
  if not amount then return false end
  redis.call('HDEL', holds_key, id)
  redis.call('ZREM', deadlines_key, id)
  redis.call('DECRBY', held_key, tonumber(amount))
  return true
end
if balance_mode == '1' and unhold(held, holds, hold_deadlines, rid) then
  if cost > 0 and redis.call('EXISTS', balance) == 1 then redis.call('DECRBY', balance, cost) end
end
if balance_mode == '2' then
  if dead == '1' then
    unhold(held, holds, hold_deadlines, slice_id)
  else
    local amount = redis.call('HGET', holds, slice_id)
    if amount then
      local take = math.min(cost, tonumber(amount))
      if take > 0 then
        redis.call('HINCRBY', holds, slice_id, -take)
        redis.call('DECRBY', held, take)
      end
    end
  end
  if cost > 0 and redis.call('EXISTS', balance) == 1 then redis.call('DECRBY', balance, cost) end
end
if cap == '1' and unhold(key_held, key_holds, key_hold_deadlines, rid) and cost > 0 then
  redis.call('INCRBY', key_spent, cost)
  redis.call('EXPIRE', key_spent, tonumber(period_ttl))
end
redis.call('XADD', usage_stream, '*', 'r', record)
return 1
"""

# A dead worker with nothing open left is forgotten (unless it beat again meanwhile); stray progress fields go too.
_FORGET = """
local open_requests, workers = KEYS[1], KEYS[2]
local worker, before = ARGV[1], tonumber(ARGV[2])
local fields = redis.call('HKEYS', open_requests)
for _, field in ipairs(fields) do
  local base = string.match(field, '^(.*):[kp]$')
  if base and redis.call('HEXISTS', open_requests, base) == 0 then redis.call('HDEL', open_requests, field) end
end
if redis.call('HLEN', open_requests) > 0 then return 0 end
local beat = redis.call('ZSCORE', workers, worker)
if beat and tonumber(beat) >= before then return 0 end
redis.call('ZREM', workers, worker)
return 1
"""


# A dead worker's balance slice is released whole.
_RELEASE_SLICE = """
local open_requests, held, holds, hold_deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local slice_id = ARGV[1]
redis.call('HDEL', open_requests, slice_id)
local amount = redis.call('HGET', holds, slice_id)
if not amount then return 0 end
redis.call('HDEL', holds, slice_id)
redis.call('ZREM', hold_deadlines, slice_id)
redis.call('DECRBY', held, tonumber(amount))
return 1
"""


# A dead worker's in-flight and held counts are taken back from each service's signals (ARGV[2]: which count).
_UNCOUNT = """
local open_requests, signal = KEYS[1], KEYS[2]
local n = tonumber(redis.call('HGET', open_requests, ARGV[1]) or '0')
redis.call('HDEL', open_requests, ARGV[1])
if n ~= 0 then redis.call('HINCRBY', signal, ARGV[2], -n) end
return n
"""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(marker: dict, progress: dict | None, now: float) -> tuple[dict, int]:
    """The usage record a swept marker becomes, and its cost in micro-units."""
    completion = int(progress["t"]) if progress else 0
    prompt = int(marker.get("prompt_tokens") or 0) if progress else 0
    cost = Decimal(progress["cost"]) if progress and progress.get("cost") is not None else None
    if cost is None and marker.get("public") and marker.get("currency"):
        cost = Decimal(0)  # a priced request that relayed nothing
    started = float(marker["started_at"])
    finished = float(progress["at"]) if progress else started
    record: dict[str, object] = {
        **{name: marker.get(name) for name in ("id", "org_id", "api_key_id", "user_id", "source", "endpoint")},
        **{name: marker.get(name) for name in ("model_id", "catalog_model_id", "service_id", "public", "stream")},
        "replica": (progress or {}).get("r") or "",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "latency_ms": max(int((finished - started) * 1000), 0),
        "ttft_ms": (progress or {}).get("ttft"),
        "status": "aborted",
        "http_status": 500,
        "error_code": LOST,
        "prompt_hash": "",
        "params": {},
        "served_model_version": "",
        "cost": str(cost) if cost is not None else None,
        "currency": marker.get("currency") or "",
        "started_at": started,
        "finished_at": finished,
    }
    micro = int((cost * 1_000_000).to_integral_value()) if cost is not None else 0
    return record, micro


def _settle(client, hash_key: str, request_id: str, *, dead: bool, now: float) -> int:
    """Settle one open marker (claimed atomically); 1 if this call settled it, else 0."""
    for _attempt in range(5):
        raw, keys, progress_raw = client.hmget(hash_key, [request_id, f"{request_id}:k", f"{request_id}:p"])
        if raw is None:
            return 0
        try:
            marker = orjson.loads(raw)
            progress = orjson.loads(progress_raw) if progress_raw else None
            hold_keys = _text(keys or b"").split(" ")
            record, micro = _record(marker, progress, now)
            balance_mode, slice_id, cap, period_ttl = (marker.get("h") or ["0", "", "0", 0])[:4]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
            logger.error("open request %s in %s is unreadable (%r); dropped", request_id, hash_key, exc)
            client.hdel(hash_key, request_id, f"{request_id}:k", f"{request_id}:p")
            client.zrem(deadlines_key(), f"{hash_key} {request_id}")
            return 0
        if len(hold_keys) != 8:
            hold_keys, balance_mode, cap = [k("none")] * 8, "0", "0"
        done = client.eval(
            _CLAIM,
            12,
            hash_key,
            deadlines_key(),
            swept_key(),
            stream_key(),
            *hold_keys,
            request_id,
            _text(progress_raw or b""),
            orjson.dumps(record),
            micro,
            str(balance_mode),
            str(slice_id or ""),
            str(cap),
            int(period_ttl or 0),
            "1" if dead else "0",
            f"{now:.3f}",
        )
        if int(done) != -1:
            return int(done)
    return 0


def open_requests_sweep(*, now: float | None = None) -> int:
    """Settle the open requests of dead gateway workers and those past their deadline; returns how many.

    Each becomes one usage record (status ``aborted``, error code ``gateway_worker_lost``) billed as the module
    docstring says: the prompt's estimate plus the completion tokens relayed (at least what the client received, at
    most ``GATEWAY_PROGRESS_TOKENS`` more) for a stream that relayed any; nothing for one that relayed nothing.
    Its reservation is released in the same script.
    """
    client = sredis()
    now = time.time() if now is None else now
    before = now - float(settings.USAGE_OPEN_GRACE_SECONDS)
    settled = 0
    for raw_worker in client.zrangebyscore(workers_key(), "-inf", f"({before}"):
        worker = _text(raw_worker)
        hash_key = open_key(worker)
        names = [_text(field) for field in client.hkeys(hash_key)]
        for name in names:
            if name.startswith((SIGNAL_FIELD_PREFIX, HELD_FIELD_PREFIX)):
                count = "inflight" if name.startswith(SIGNAL_FIELD_PREFIX) else "held"
                service_id = name.partition(":")[2]
                client.eval(_UNCOUNT, 2, hash_key, serving_signals.signal_key(service_id), name, count)
            elif not name.startswith("slice:") and not name.endswith((":k", ":p")):
                settled += _settle(client, hash_key, name, dead=True, now=now)
        for name in names:
            if name.startswith("slice:"):
                slice_keys = _text(client.hget(hash_key, name) or b"").split(" ")
                if len(slice_keys) == 3:
                    client.eval(_RELEASE_SLICE, 4, hash_key, *slice_keys, name)
                else:
                    client.hdel(hash_key, name)
        if client.eval(_FORGET, 2, hash_key, workers_key(), worker, f"{before}"):
            logger.info("gateway worker %s is gone; its open requests are settled", worker)
    grace = float(settings.USAGE_OPEN_GRACE_SECONDS)
    for raw_member in client.zrangebyscore(deadlines_key(), "-inf", now):
        member = _text(raw_member)
        hash_key, _, request_id = member.rpartition(" ")
        progress = client.hget(hash_key, f"{request_id}:p")
        try:
            if progress and float(orjson.loads(progress)["at"]) > now - grace:
                client.zadd(deadlines_key(), {member: now + grace})  # still relaying: a very long stream
                continue
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        if _settle(client, hash_key, request_id, dead=False, now=now):
            settled += 1
        else:
            client.zrem(deadlines_key(), member)
    client.zremrangebyscore(swept_key(), "-inf", now - SWEPT_KEEP_SECONDS)
    if settled:
        logger.warning("settled %d open requests of gateway workers that died or overran", settled)
    return settled
