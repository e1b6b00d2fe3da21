"""Rate limits, budgets and reservations in Redis, shared by every gateway worker.

Amounts are integer micro-units of the platform currency. Per org: ``bal`` is the spendable balance (balance plus
credit limit) billing last published, decremented here as requests settle; ``held`` is the sum of open
reservations, each also kept in a hash (amount) and a sorted set (deadline) so that a reservation whose worker died
expires instead of leaking. Per key with a spend cap: ``spent`` for the current period plus the same hold triple.

Admission is one Lua script (one round trip): rate-limit windows first, then the balance and the key cap; it either
counts and reserves everything or nothing, so fifty parallel requests cannot overspend a small balance.

Balance slices. A request whose key has no rate limit or spend cap (and no org-wide limit is configured) only needs
the org's balance. For those, the admission script also hands the worker a *slice*: one more hold in the org's
holds, of at most 1/``GATEWAY_BALANCE_SLICE_FRACTION`` of what is available and ``GATEWAY_BALANCE_SLICE_MAX``, and
at least four times the request's worst case (a smaller balance gets no slice: every request is reserved in Redis).
The worker's next requests reserve their worst case from the slice in memory, with no round trip before the upstream
call; settling moves the real cost from the slice's hold to the balance (in the settlement round trip that every
request makes anyway). The slice is money held in Redis, so no worker can spend more than the balance; the slice of
a worker that dies expires like any hold (``HOLD_SECONDS`` after it was last granted or settled). A slice is used
only while a check of the org's balance against all its holds, made every ``SLICE_CHECK_SECONDS`` in the background,
is younger than ``SLICE_MAX_AGE_SECONDS``; when billing publishes a balance that no longer covers the holds (a
charge from elsewhere, an adjustment), the slice is given back, so such a change reaches every worker within a
second, as a revocation does. Idle slices are given back after ``SLICE_IDLE_SECONDS``, and all of them at shutdown.

Billing publishes the balance after every ledger change with :func:`publish_balance`; until an org's balance was
ever published, the loader named by ``settings.MAAS_BALANCE_LOADER`` is asked once and its answer cached.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from billing.pricing import Rates, token_worst_case
from gateway import errors
from gateway.store import REDIS_ERRORS, LuaScript, aredis, fredis, k, keep_until_redis_is_back, sredis
from metering import open_requests

logger = logging.getLogger(__name__)

MICRO = Decimal(1_000_000)
WINDOW_SECONDS = 60
HOLD_SECONDS = 15 * 60  # a reservation outlives any request; one left by a dead worker expires then
_UNLIMITED = object()

# The scripts' KEYS and ARGV slots, named. Each builder below is one list of a script: its keyword-only parameters
# are the slots in order, it returns them as the list to send (as cheap as a list literal: this is the hot path), and
# the script's prologue (``_lua``) reads every slot into a local of the same name, so a script body never says
# KEYS[n] or ARGV[n].


def admit_keys(
    *,
    key_requests: str,  # this minute's requests and tokens of the key, then of the org
    key_tokens: str,
    org_requests: str,
    org_tokens: str,
    balance: str,  # the org's spendable balance as billing published it
    held: str,  # the sum of the org's holds, each in ``holds`` (id → amount) and ``hold_deadlines`` (id by expiry)
    holds: str,
    hold_deadlines: str,
    key_spent: str,  # the key's spend in its cap period, and its holds
    key_held: str,
    key_holds: str,
    key_hold_deadlines: str,
    open_requests: str,  # this worker's open markers (metering.open_requests), and all workers' marker deadlines
    open_deadlines: str,
    open_swept: str,  # requests the sweeper settled: their late settlement does nothing
) -> list[str]:
    """KEYS of the admission and settlement scripts (settlement with a usage entry appends ``usage_stream``)."""
    return [
        key_requests,
        key_tokens,
        org_requests,
        org_tokens,
        balance,
        held,
        holds,
        hold_deadlines,
        key_spent,
        key_held,
        key_holds,
        key_hold_deadlines,
        open_requests,
        open_deadlines,
        open_swept,
    ]


def admit_args(
    *,
    key_rpm: int,  # a limit of 0 is no limit
    key_tpm: int,
    org_rpm: int,
    org_tpm: int,
    est_tokens: int,
    window_ttl: int,
    request_id: str,
    cost: int,  # the worst case to reserve, in micro-units
    check_balance: str,  # '1' check the balance (none published yet: ask the loader), '2' if published, '0' never
    cap: int,  # the key's spend cap in micro-units, -1 for none
    now: str,
    deadline: str,  # when the holds taken here expire
    period_ttl: int,
    marker: bytes | str,  # the request's open marker (JSON), '' for none
) -> list[str | bytes | int]:
    """ARGV of the admission script (then ``slice_grant`` when the worker asks for a balance slice)."""
    return [
        key_rpm,
        key_tpm,
        org_rpm,
        org_tpm,
        est_tokens,
        window_ttl,
        request_id,
        cost,
        check_balance,
        cap,
        now,
        deadline,
        period_ttl,
        marker,
    ]


def slice_grant(
    *,
    slice_id: str,
    slice_fraction: float,  # the slice takes at most this fraction of what is available...
    slice_max: int,  # ...and this much...
    slice_min: int,  # ...and at least this much, else nothing
) -> list[str | int | float]:
    """ARGV after ``admit_args``: a balance slice to grant (or grow) for this worker."""
    return [slice_id, slice_fraction, slice_max, slice_min]


def settle_args(
    *,
    request_id: str,
    tokens_delta: int,  # actual tokens less those counted at admission
    cost: int,  # the actual cost in micro-units
    period_ttl: int,
    key_tpm: str,  # '1': the key's token window counted this request
    org_tpm: str,
    balance_hold: str,  # '1' a hold of its own, '2' reserved from the slice ``slice_id``, '0' none
    cap_hold: str,  # '1': held against the key's spend cap
    marked: str,  # '1': remove the request's open marker (if the sweeper settled it already, do nothing at all)
) -> list[str | int]:
    """ARGV of the settlement scripts; then the ``usage_entry`` for ``usage_stream`` ('' for none) and
    ``slice_settle``, each only when needed."""
    return [request_id, tokens_delta, cost, period_ttl, key_tpm, org_tpm, balance_hold, cap_hold, marked]


def slice_settle(
    *,
    slice_id: str,
    slice_deadline: str,  # the slice's hold is renewed to this
    slice_last: str,  # '1': the slice was given back and this was its last request: drop its hold
) -> list[str]:
    return [slice_id, slice_deadline, slice_last]


def give_back_keys(*, held: str, holds: str, hold_deadlines: str, open_requests: str) -> list[str]:
    return [held, holds, hold_deadlines, open_requests]


def give_back_args(*, slice_id: str, give: int | str) -> list[str | int]:
    """``give``: micro-units of the slice's hold to give back, or '*' for all of it."""
    return [slice_id, give]


def slots(builder: Callable[..., list[Any]]) -> tuple[str, ...]:
    """The slot names of a builder, in order."""
    return tuple(inspect.signature(builder).parameters)


def _lua(keys: tuple[str, ...], args: tuple[str, ...], body: str) -> str:
    """``body`` after a prologue that reads each KEYS and ARGV slot into a local named for it."""
    prologue = [f"local {name} = KEYS[{i}]" for i, name in enumerate(keys, 1)]
    prologue += [f"local {name} = ARGV[{i}]" for i, name in enumerate(args, 1)]
    return "\n".join(prologue) + "\n" + body


_CHECK_BALANCE = slots(admit_args).index("check_balance")  # rewritten when the loader says unlimited

_ADMIT = LuaScript(
    _lua(
        slots(admit_keys),
        slots(admit_args) + slots(slice_grant),
        """
local function purge(held_key, holds_key, deadlines_key, at)
  local expired = redis.call('ZRANGEBYSCORE', deadlines_key, '-inf', at)
  for _, id in ipairs(expired) do
    local amount = tonumber(redis.call('HGET', holds_key, id) or '0')
    redis.call('HDEL', holds_key, id)
    redis.call('ZREM', deadlines_key, id)
    if amount > 0 then redis.call('DECRBY', held_key, amount) end
  end
end
local est = tonumber(est_tokens)
local limits = {key_rpm, key_tpm, org_rpm, org_tpm}
local windows = {key_requests, key_tokens, org_requests, org_tokens}
local counts = {}
for i = 1, 4 do
  local limit = tonumber(limits[i])
  local current = tonumber(redis.call('GET', windows[i]) or '0')
  counts[i] = current
  if limit > 0 then
    local want = 1
    if i % 2 == 0 then want = est end
    if current + want > limit then return {1, i, current, limit} end
  end
end
local cost_micro = tonumber(cost)
local now_ts = tonumber(now)
local tracked = 0
local published = false
if check_balance ~= '0' then
  published = redis.call('GET', balance)
  if published then tracked = 1 elseif check_balance == '1' then return {2} end
end
if tracked == 1 then
  purge(held, holds, hold_deadlines, now_ts)
  local available = tonumber(published) - tonumber(redis.call('GET', held) or '0')
  if available <= 0 or available < cost_micro then return {3, tostring(available)} end
end
local cap_micro = tonumber(cap)
if cost_micro > 0 and cap_micro >= 0 then
  purge(key_held, key_holds, key_hold_deadlines, now_ts)
  local used = tonumber(redis.call('GET', key_spent) or '0') + tonumber(redis.call('GET', key_held) or '0')
  if used + cost_micro > cap_micro then return {4, tostring(cap_micro - used)} end
end
local ttl = tonumber(window_ttl)
for i = 1, 4 do
  if tonumber(limits[i]) > 0 then
    local n = 1
    if i % 2 == 0 then n = est end
    counts[i] = redis.call('INCRBY', windows[i], n)
    redis.call('EXPIRE', windows[i], ttl)
  end
end
if marker ~= '' then
  local names = {balance, held, holds, hold_deadlines, key_spent, key_held, key_holds, key_hold_deadlines}
  redis.call('HSET', open_requests, request_id, marker, request_id .. ':k', table.concat(names, ' '))
  redis.call('ZADD', open_deadlines, deadline, open_requests .. ' ' .. request_id)
end
if cost_micro > 0 then
  if tracked == 1 then
    redis.call('HSET', holds, request_id, cost_micro)
    redis.call('ZADD', hold_deadlines, deadline, request_id)
    redis.call('INCRBY', held, cost_micro)
  end
  if cap_micro >= 0 then
    redis.call('HSET', key_holds, request_id, cost_micro)
    redis.call('ZADD', key_hold_deadlines, deadline, request_id)
    redis.call('INCRBY', key_held, cost_micro)
  end
end
local granted = 0
if tracked == 1 and slice_id then
  local available = tonumber(published) - tonumber(redis.call('GET', held) or '0')
  local want = math.floor(available / tonumber(slice_fraction))
  if want > tonumber(slice_max) then want = tonumber(slice_max) end
  if want >= tonumber(slice_min) then
    redis.call('HINCRBY', holds, slice_id, want)
    redis.call('ZADD', hold_deadlines, deadline, slice_id)
    redis.call('INCRBY', held, want)
    redis.call('HSET', open_requests, slice_id, held .. ' ' .. holds .. ' ' .. hold_deadlines)
    granted = want
  end
end
return {0, counts[1], counts[2], counts[3], counts[4], tracked, granted}
""",
    )
)

_SETTLE_BODY = """
local function unhold(held_key, holds_key, deadlines_key, id)
  local amount = redis.call('HGET', holds_key, id)
  if not amount then return false end
  redis.call('HDEL', holds_key, id)
  redis.call('ZREM', deadlines_key, id)
  redis.call('DECRBY', held_key, tonumber(amount))
  return true
end
if marked == '1' then
  local removed = redis.call('HDEL', open_requests, request_id, request_id .. ':k', request_id .. ':p')
  redis.call('ZREM', open_deadlines, open_requests .. ' ' .. request_id)
  if removed < 2 and redis.call('ZSCORE', open_swept, request_id) then return 0 end
end
local delta = tonumber(tokens_delta)
if delta ~= 0 then
  if key_tpm == '1' and redis.call('EXISTS', key_tokens) == 1 then redis.call('INCRBY', key_tokens, delta) end
  if org_tpm == '1' and redis.call('EXISTS', org_tokens) == 1 then redis.call('INCRBY', org_tokens, delta) end
end
local actual = tonumber(cost)
if balance_hold == '1' and unhold(held, holds, hold_deadlines, request_id) then
  if actual > 0 and redis.call('EXISTS', balance) == 1 then redis.call('DECRBY', balance, actual) end
end
-- reserved from a balance slice: the slice's hold gives the real cost to the balance (and is renewed)
if balance_hold == '2' then
  local amount = redis.call('HGET', holds, slice_id)
  if amount then
    amount = tonumber(amount)
    local take = actual
    if take > amount then take = amount end
    if slice_last == '1' then take = amount end
    if take > 0 then redis.call('DECRBY', held, take) end
    if slice_last == '1' then
      redis.call('HDEL', holds, slice_id)
      redis.call('ZREM', hold_deadlines, slice_id)
      redis.call('HDEL', open_requests, slice_id)
    else
      if take > 0 then redis.call('HINCRBY', holds, slice_id, -take) end
      redis.call('ZADD', hold_deadlines, slice_deadline, slice_id)
    end
  end
  if actual > 0 and redis.call('EXISTS', balance) == 1 then redis.call('DECRBY', balance, actual) end
end
if cap_hold == '1' and unhold(key_held, key_holds, key_hold_deadlines, request_id) then
  if actual > 0 then
    redis.call('INCRBY', key_spent, actual)
    redis.call('EXPIRE', key_spent, tonumber(period_ttl))
  end
end
"""
_SETTLE_KEYS = (*slots(admit_keys), "usage_stream")
_SETTLE_ARGS = (*slots(settle_args), "usage_entry", *slots(slice_settle))
_SETTLE = LuaScript(_lua(_SETTLE_KEYS, _SETTLE_ARGS, _SETTLE_BODY + "return 1\n"))


def marker_keys(*, open_requests: str, open_deadlines: str, open_swept: str, usage_stream: str) -> list[str]:
    """KEYS of the settlement of a request that held nothing but its open marker."""
    return [open_requests, open_deadlines, open_swept, usage_stream]


def marker_args(*, request_id: str, usage_entry: bytes | str) -> list[bytes | str]:
    return [request_id, usage_entry]  # usage_entry '' for none


# The settlement of a request that held nothing but its open marker (counted only, or reserved from a slice with
# nothing to give back yet): remove the marker and append the usage entry, unless the sweeper settled it already.
_SETTLE_MARKER = LuaScript(
    _lua(
        slots(marker_keys),
        slots(marker_args),
        """
local removed = redis.call('HDEL', open_requests, request_id, request_id .. ':k', request_id .. ':p')
redis.call('ZREM', open_deadlines, open_requests .. ' ' .. request_id)
if removed < 2 and redis.call('ZSCORE', open_swept, request_id) then return 0 end
if usage_entry ~= '' then redis.call('XADD', usage_stream, '*', 'r', usage_entry) end
return 1
""",
    )
)
_OPEN_KEYS = slice(12, 15)  # open_requests, open_deadlines, open_swept in admit_keys
assert slots(admit_keys)[_OPEN_KEYS] == ("open_requests", "open_deadlines", "open_swept")
# Settlement plus the request's usage entry: one round trip.
_SETTLE_RECORD = LuaScript(
    _lua(
        _SETTLE_KEYS, _SETTLE_ARGS, _SETTLE_BODY + "redis.call('XADD', usage_stream, '*', 'r', usage_entry)\nreturn 1\n"
    )
)

# Give back (part of) a balance slice.
_GIVE_BACK = LuaScript(
    _lua(
        slots(give_back_keys),
        slots(give_back_args),
        """
local amount = redis.call('HGET', holds, slice_id)
if not amount then return 0 end
amount = tonumber(amount)
local given = amount
if give ~= '*' and tonumber(give) < amount then given = tonumber(give) end
if given == amount then
  redis.call('HDEL', holds, slice_id)
  redis.call('ZREM', hold_deadlines, slice_id)
  redis.call('HDEL', open_requests, slice_id)
else
  redis.call('HINCRBY', holds, slice_id, -given)
end
if given > 0 then redis.call('DECRBY', held, given) end
return given
""",
    )
)

SLICE_CHECK_SECONDS = 0.25  # how often a worker holding slices checks its orgs' balances against their holds
SLICE_MAX_AGE_SECONDS = 0.75  # a slice is used only while that check is younger than this
SLICE_IDLE_SECONDS = 10.0  # a slice no request used for this long is given back
SLICE_MIN_REQUESTS = 4  # a slice covers at least this many worst cases of the request that asks for it


class Slice:
    """Part of an org's balance held in Redis for this worker (event loop): ``remaining`` is what new requests may
    reserve, ``outstanding`` what open requests reserved; Redis holds ``remaining + outstanding`` under ``id``."""

    __slots__ = (
        "id",
        "org_id",
        "keys",
        "remaining",
        "outstanding",
        "last_used",
        "valid_until",
        "checked_at",
        "growing",
        "granted",
        "closed",
        "hold_names",
    )

    def __init__(self, org_id: str, keys: list[str], now: float):
        self.id = f"slice:{uuid.uuid4().hex}"
        self.org_id = org_id
        self.keys = keys  # the settlement script's keys (only the balance and hold keys matter for a slice)
        self.remaining = 0
        self.outstanding = 0
        self.last_used = now
        self.valid_until = now + HOLD_SECONDS - 60  # Redis drops the hold at HOLD_SECONDS without a renewal
        self.checked_at = float("-inf")  # time.monotonic() when a read that found the org's holds covered was sent
        self.growing = False  # a request is asking Redis to grow it: others do not ask too
        self.granted = False  # Redis holds something under its id
        self.closed = False
        self.hold_names = " ".join(keys[4:12])  # an open marker's reservation keys (metering.open_requests)

    def covers(self, cost_micro: int, now: float) -> bool:
        return (
            not self.closed
            and self.remaining > 0
            and self.remaining >= cost_micro
            and now < self.valid_until
            and time.monotonic() - self.checked_at < SLICE_MAX_AGE_SECONDS
        )


class _Slices:
    """One event loop's slices by org, and their background check."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.by_org: dict[str, Slice] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Future | None = None

    def schedule(self) -> None:
        if self.timer is None and self.task is None and self.by_org:
            self.timer = self.loop.call_later(SLICE_CHECK_SECONDS, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.by_org:
            self.task = self.loop.create_task(self.check())
            self.task.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Future) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            logger.warning("checking balance slices failed: %r", task.exception())
        self.schedule()

    async def check(self) -> None:
        """Give back idle slices and those of orgs whose balance no longer covers their holds."""
        now = time.time()
        for idle in list(self.by_org.values()):
            if idle.outstanding == 0 and (now - idle.last_used > SLICE_IDLE_SECONDS or now > idle.valid_until):
                await self.give_back(idle)
        orgs = list(self.by_org)
        if not orgs:
            return
        sent = time.monotonic()
        values = await fredis().execute(
            "MGET", *[key for org_id in orgs for key in (_balance_key(org_id), k("held", org_id))]
        )
        for i, org_id in enumerate(orgs):
            balance, held = values[2 * i], values[2 * i + 1]
            piece = self.by_org.get(org_id)
            if piece is None:
                continue
            if balance is None or int(balance) - int(held or 0) < 0:
                await self.give_back(piece)
            else:
                piece.checked_at = max(piece.checked_at, sent)

    async def give_back(self, piece: Slice) -> None:
        """Stop admitting from ``piece`` and return what no open request reserved."""
        if self.by_org.get(piece.org_id) is piece:
            del self.by_org[piece.org_id]
        piece.closed = True
        give, piece.remaining = piece.remaining, 0
        keys = give_back_keys(
            held=k("held", piece.org_id),
            holds=k("holds", piece.org_id),
            hold_deadlines=k("hold-deadlines", piece.org_id),
            open_requests=piece.keys[12],
        )
        if piece.outstanding == 0:
            await _GIVE_BACK.acall(keys, give_back_args(slice_id=piece.id, give="*"))
        elif give > 0:
            await _GIVE_BACK.acall(keys, give_back_args(slice_id=piece.id, give=give))

    async def give_back_all(self) -> None:
        for piece in list(self.by_org.values()):
            await self.give_back(piece)


_slices: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slices] = weakref.WeakKeyDictionary()


def _loop_slices() -> _Slices:
    loop = asyncio.get_running_loop()
    state = _slices.get(loop)
    if state is None:
        state = _slices[loop] = _Slices(loop)
    return state


async def give_back_slices() -> None:
    """Return this event loop's balance slices (the worker is shutting down)."""
    state = _slices.get(asyncio.get_running_loop())
    if state is not None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        await state.give_back_all()


class _Worker:
    """This event loop as a gateway worker that holds open requests (``metering.open_requests``): its id, its
    markers' hash, and a heartbeat in ``open-workers`` every third of ``USAGE_OPEN_GRACE_SECONDS``, by which the
    sweeper tells a worker that died (SIGKILL, OOM) from one still serving."""

    __slots__ = ("id", "open_requests", "open_deadlines", "open_swept", "loop", "timer", "interval")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.open_requests = open_requests.open_key(self.id)
        self.open_deadlines = open_requests.deadlines_key()
        self.open_swept = open_requests.swept_key()
        self.loop = loop
        self.interval = max(float(settings.USAGE_OPEN_GRACE_SECONDS) / 3, 0.1)
        self.timer: asyncio.TimerHandle | None = None
        self.beat()

    def beat(self) -> None:
        self.timer = self.loop.call_later(self.interval, self.beat)
        try:
            fredis().fire("ZADD", open_requests.workers_key(), f"{time.time():.3f}", self.id)
        except Exception as exc:  # the next beat tries again; the grace covers a few missed ones
            logger.warning("gateway worker heartbeat failed: %r", exc)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


_workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Worker] = weakref.WeakKeyDictionary()


def _loop_worker() -> _Worker:
    loop = asyncio.get_running_loop()
    worker = _workers.get(loop)
    if worker is None:
        worker = _workers[loop] = _Worker(loop)
    return worker


def worker_open_key() -> str:
    """This event loop's open-requests hash (its heartbeat started with it): what the sweeper reads if it dies."""
    return _loop_worker().open_requests


def stop_heartbeat() -> None:
    """Stop this event loop's heartbeat (the worker is shutting down; what it left open is swept after the grace)."""
    worker = _workers.get(asyncio.get_running_loop())
    if worker is not None:
        worker.stop()


def progress(admission: Admission, payload: bytes) -> None:
    """Record a stream's progress in its open marker (not waited on): what the sweeper bills if this worker dies
    before the request settles. A slice-reserved stream's first progress writes its whole marker."""
    if admission.settled:
        return
    rid, unwritten = admission.request_id, admission.unwritten
    if unwritten is not None:
        open_key, deadlines, marker, hold_names, deadline = unwritten
        admission.unwritten = None
        admission.open_requests = open_key
        client = fredis()
        client.fire("HSET", open_key, rid, orjson.dumps(marker), rid + ":k", hold_names, rid + ":p", payload)
        client.fire("ZADD", deadlines, deadline, f"{open_key} {rid}")
    elif admission.open_requests:
        fredis().fire("HSET", admission.open_requests, rid + ":p", payload)


def to_micro(amount: Decimal, rounding=ROUND_HALF_UP) -> int:
    return int((Decimal(amount) * MICRO).to_integral_value(rounding=rounding))


def from_micro(units: int) -> Decimal:
    return Decimal(int(units)) / MICRO


def _balance_key(org_id) -> str:
    return k("bal", org_id)


def publish_balance(org_id, available: Decimal) -> None:
    """Billing calls this after every ledger change with the org's balance plus credit limit."""
    sredis().set(_balance_key(org_id), to_micro(available, ROUND_FLOOR))


async def apublish_balance(org_id, available: Decimal) -> None:
    await aredis().set(_balance_key(org_id), to_micro(available, ROUND_FLOOR))


def published_balance(org_id) -> Decimal | None:
    """The balance the gateway holds for an org (None: never published), less nothing: holds are separate."""
    raw = sredis().get(_balance_key(org_id))
    return None if raw is None else from_micro(int(raw))


def open_holds(org_id) -> Decimal:
    return from_micro(int(sredis().get(k("held", org_id)) or 0))


_loader_state: dict[str, Any] = {}


def _load_balance(org_id) -> Decimal | object:
    """The loader's answer for an org, or _UNLIMITED when billing is not installed (logged once)."""
    path = settings.MAAS_BALANCE_LOADER
    loader: Any = _loader_state.get(path)
    if loader is None:
        try:
            loader = import_string(path)
        except ImportError:
            loader = _UNLIMITED
            logger.warning("balance loader %s cannot be imported; treating balances as unlimited", path)
        _loader_state[path] = loader
    if loader is _UNLIMITED:
        return _UNLIMITED
    value = loader(org_id)
    return _UNLIMITED if value is None else Decimal(value)


_unlimited_until: dict = {}
UNLIMITED_RECHECK_SECONDS = 30.0


def _loader_missing() -> bool:
    """True once the configured loader was found not importable (billing not installed): no thread hop then."""
    return _loader_state.get(settings.MAAS_BALANCE_LOADER) is _UNLIMITED


def _remember_unlimited(org_id, now: float) -> None:
    """An org without a published balance that the loader calls unlimited: admissions skip asking again for a while
    (a balance billing publishes meanwhile is still checked: the admission script looks for it every time)."""
    if len(_unlimited_until) > 100_000:
        _unlimited_until.clear()
    _unlimited_until[org_id] = now + UNLIMITED_RECHECK_SECONDS


def _period(key_period: str, now: datetime) -> tuple[str, int]:
    local = timezone.localtime(now)
    if key_period == "daily":
        return local.strftime("%Y-%m-%d"), 2 * 86400
    return local.strftime("%Y-%m"), 32 * 86400


@dataclass
class Admission:
    """What admission counted and held for one request; settle() undoes or finalises exactly that."""

    request_id: str
    org_id: str
    key_id: str | None
    keys: list[str]
    est_tokens: int
    reserved_micro: int = 0
    balance_tracked: bool = False
    cap_tracked: bool = False
    key_tpm: bool = False
    org_tpm: bool = False
    period_ttl: int = 0
    headers: dict = field(default_factory=dict)
    settled: bool = False
    slice: Slice | None = None  # reserved from this worker's balance slice, not by its own hold
    open_requests: str = ""  # the hash holding this request's open marker ('' for none)
    unwritten: tuple | None = None  # a slice-reserved stream's marker, written with its first progress

    @property
    def marked(self) -> bool:
        """Whether this request has (or will have, with its first progress) an open marker."""
        return bool(self.open_requests) or self.unwritten is not None

    @property
    def needs_settle(self) -> bool:
        """False when admission only counted requests and wrote no open marker: nothing to adjust or remove."""
        return self.balance_tracked or self.cap_tracked or self.key_tpm or self.org_tpm or bool(self.open_requests)


def _rate_headers(limit_r, used_r, limit_t, used_t, reset_s) -> dict:
    headers = {}
    if limit_r:
        headers["x-ratelimit-limit-requests"] = str(limit_r)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limit_r - used_r))
        headers["x-ratelimit-reset-requests"] = f"{reset_s}s"
    if limit_t:
        headers["x-ratelimit-limit-tokens"] = str(limit_t)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limit_t - used_t))
        headers["x-ratelimit-reset-tokens"] = f"{reset_s}s"
    return headers


async def admit(
    *,
    request_id: str,
    org_id: str,
    key=None,
    est_tokens: int,
    price: Rates | None,
    reserve_tokens: tuple[int, int] = (0, 0),
    check_balance: bool = True,
    marker: dict | None = None,
) -> Admission:
    """Count the request against the rate limits and reserve its worst-case cost; raise GatewayError if refused.

    ``key`` is the gateway's cached key info (rpm_limit, tpm_limit, spend_cap_micro, spend_cap_period) or None.
    ``reserve_tokens`` is (prompt estimate, completion tokens) to price the worst case with (billing's rule).
    ``marker``: the usage record's fields known now; written, with how the reservation is held, as the request's
    open marker (``metering.open_requests``) in the admission's round trip, or sent without waiting when the
    request is reserved from a balance slice (no round trip).
    """
    now = time.time()
    minute = int(now // WINDOW_SECONDS)
    reset_s = WINDOW_SECONDS - int(now % WINDOW_SECONDS)
    key_id = str(key.id) if key is not None else None
    key_rpm = (key.rpm_limit or 0) if key is not None else 0
    key_tpm = (key.tpm_limit or 0) if key is not None else 0
    org_rpm, org_tpm = settings.GATEWAY_ORG_RPM, settings.GATEWAY_ORG_TPM
    kid = key_id or "-"
    cost_micro = 0
    if price is not None:
        prompt_tokens, completion_tokens = reserve_tokens
        worst = token_worst_case(price, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        cost_micro = to_micro(worst, ROUND_CEILING)
    cap_micro = key.spend_cap_micro if (key is not None and key.spend_cap_micro is not None and cost_micro) else -1
    state: _Slices | None = None
    piece: Slice | None = None
    if (
        check_balance
        and cap_micro < 0
        and not (key_rpm or key_tpm or org_rpm or org_tpm)
        and settings.GATEWAY_BALANCE_SLICE_FRACTION > 0
    ):
        state = _loop_slices()
        piece = state.by_org.get(org_id)
        if piece is not None and piece.covers(cost_micro, now):
            piece.remaining -= cost_micro
            piece.outstanding += cost_micro
            piece.last_used = now
            admitted = Admission(
                request_id=request_id,
                org_id=org_id,
                key_id=key_id,
                keys=piece.keys,
                est_tokens=est_tokens,
                reserved_micro=cost_micro,
                balance_tracked=True,
                slice=piece,
            )
            if marker is not None and marker.get("stream"):
                # No round trip here, so no marker yet either: the slice's hold is released whole with a dead worker
                # (the slice is in its markers' hash) and a request that relayed nothing is billed nothing, so a
                # stream's marker goes out with its first progress and a non-streamed request's never.
                marker["h"] = ("2", piece.id, "0", 0)
                deadline = f"{now + HOLD_SECONDS:.3f}"
                admitted.unwritten = (piece.keys[12], piece.keys[13], marker, piece.hold_names, deadline)
            return admitted
    period, period_ttl = ("", 0)
    if cap_micro >= 0:
        period, period_ttl = _period(key.spend_cap_period, timezone.now())
    worker = _loop_worker()
    keys = admit_keys(
        key_requests=k("rl", "key", kid, "r", minute),
        key_tokens=k("rl", "key", kid, "t", minute),
        org_requests=k("rl", "org", org_id, "r", minute),
        org_tokens=k("rl", "org", org_id, "t", minute),
        balance=_balance_key(org_id),
        held=k("held", org_id),
        holds=k("holds", org_id),
        hold_deadlines=k("hold-deadlines", org_id),
        key_spent=k("kspent", kid, period),
        key_held=k("kheld", kid),
        key_holds=k("kholds", kid),
        key_hold_deadlines=k("khold-deadlines", kid),
        open_requests=worker.open_requests,
        open_deadlines=worker.open_deadlines,
        open_swept=worker.open_swept,
    )
    check = "1" if check_balance else "0"
    encoded: bytes | str = ""
    if marker is not None:
        balance_mode = "1" if cost_micro and check_balance else "0"
        marker["h"] = (balance_mode, "", "1" if cap_micro >= 0 else "0", period_ttl)
        encoded = orjson.dumps(marker)
    if check_balance and _unlimited_until.get(org_id, 0.0) > now:
        check = "2"  # the loader said unlimited: check a balance only once billing publishes one
    args = admit_args(
        key_rpm=key_rpm,
        key_tpm=key_tpm,
        org_rpm=org_rpm,
        org_tpm=org_tpm,
        est_tokens=est_tokens,
        window_ttl=WINDOW_SECONDS * 2,
        request_id=request_id,
        cost=cost_micro,
        check_balance=check,
        cap=cap_micro,
        now=f"{now:.3f}",
        deadline=f"{now + HOLD_SECONDS:.3f}",
        period_ttl=period_ttl,
        marker=encoded,
    )
    grant: list[str | int | float] = []
    growing = None  # the slice this admission asks Redis to grant or grow
    if state is not None:
        if piece is not None and now >= piece.valid_until:
            state.loop.create_task(state.give_back(piece)).add_done_callback(_retrieve)
            piece = None
        if piece is None:
            piece = state.by_org[org_id] = Slice(org_id, keys, now)
        if not piece.growing:
            growing = piece
            piece.growing = True
            grant = slice_grant(
                slice_id=piece.id,
                slice_fraction=settings.GATEWAY_BALANCE_SLICE_FRACTION,
                slice_max=to_micro(settings.GATEWAY_BALANCE_SLICE_MAX, ROUND_FLOOR),
                slice_min=max(SLICE_MIN_REQUESTS * cost_micro, 1),
            )
    sent = time.monotonic()
    result: Any = None
    try:
        for _attempt in range(2):
            result = await _ADMIT.acall(keys, [*args, *grant])
            status = int(result[0])
            if status != 2:
                break
            loaded = _UNLIMITED if _loader_missing() else await sync_to_async(_load_balance)(org_id)
            if not isinstance(loaded, Decimal):  # _UNLIMITED
                _remember_unlimited(org_id, now)
                args[_CHECK_BALANCE] = "2"
            else:
                await aredis().set(_balance_key(org_id), to_micro(loaded, ROUND_FLOOR), nx=True)
    finally:
        if growing is not None and state is not None:  # a slice grows only with state
            growing.growing = False
            granted = int(result[6]) if result is not None and int(result[0]) == 0 else 0
            if granted:
                growing.remaining += granted
                growing.granted = True
                if growing.closed:  # given back while asking: what it was granted goes back too
                    state.loop.create_task(state.give_back(growing)).add_done_callback(_retrieve)
                else:
                    growing.checked_at = max(growing.checked_at, sent)
                    growing.last_used = now
                    state.schedule()
            elif growing.remaining <= 0 and growing.outstanding == 0 and state.by_org.get(org_id) is growing:
                if growing.granted:  # used up and not grown: drop its empty hold
                    state.loop.create_task(state.give_back(growing)).add_done_callback(_retrieve)
                else:
                    del state.by_org[org_id]  # nothing held under its id
    if status == 1:
        which = int(result[1])
        names = {
            1: ("requests", "key"),
            2: ("tokens", "key"),
            3: ("requests", "organization"),
            4: ("tokens", "organization"),
        }
        kind, scope = names[which]
        limit = int(result[3])
        used = int(result[2])
        headers = (
            _rate_headers(limit, used, 0, 0, reset_s)
            if kind == "requests"
            else _rate_headers(0, 0, limit, used, reset_s)
        )
        raise errors.rate_limited(
            f"Rate limit reached for {kind} per minute on this {scope}: limit {limit}, used {used}. "
            f"Try again in {reset_s}s.",
            kind=kind,
            retry_after=reset_s,
            headers=headers,
        )
    if status in (3, 4):
        left = int(result[1])
        needed = f"{from_micro(cost_micro).normalize():f} {settings.CURRENCY}"  # micro-units of the platform currency
        remaining = f"{from_micro(max(left, 0)).normalize():f} {settings.CURRENCY}"
        if status == 3:
            if left <= 0:
                raise errors.insufficient_quota(
                    "You exceeded your current quota: the organization's balance is used up. Top up to continue."
                )
            raise errors.insufficient_quota(
                f"This request's worst-case cost {needed} exceeds the {remaining} left of the organization's balance "
                "(the worst case is reserved before the call); lower max_tokens or top up."
            )
        if left <= 0:
            raise errors.insufficient_quota(
                "This API key reached its spend cap for the current period; raise the cap or wait for the reset."
            )
        raise errors.insufficient_quota(
            f"This request's worst-case cost {needed} exceeds the {remaining} left of this API key's spend cap for "
            "the current period (the worst case is reserved before the call); lower max_tokens or raise the cap."
        )
    counts = [int(x) for x in result[1:5]]
    if key_rpm or key_tpm:
        headers = _rate_headers(key_rpm, counts[0], key_tpm, counts[1], reset_s)
    else:
        headers = _rate_headers(org_rpm, counts[2], org_tpm, counts[3], reset_s)
    return Admission(
        request_id=request_id,
        org_id=org_id,
        key_id=key_id,
        keys=keys,
        est_tokens=est_tokens,
        reserved_micro=cost_micro,
        balance_tracked=bool(cost_micro) and int(result[5]) == 1,
        cap_tracked=cap_micro >= 0,
        key_tpm=bool(key_tpm),
        org_tpm=bool(org_tpm),
        period_ttl=period_ttl,
        headers=headers,
        open_requests=worker.open_requests if marker is not None else "",
    )


def _settle_args(
    admission: Admission, actual_tokens: int, cost_micro: int, *, slice_settles: bool = True
) -> list[str | int]:
    """``slice_settles``: False when a slice-reserved request has nothing to change in Redis but its marker."""
    balance_hold = "0"
    if admission.balance_tracked:
        balance_hold = "1" if admission.slice is None else ("2" if slice_settles else "0")
    return settle_args(
        request_id=admission.request_id,
        tokens_delta=actual_tokens - admission.est_tokens,
        cost=cost_micro,
        period_ttl=admission.period_ttl,
        key_tpm="1" if admission.key_tpm else "0",
        org_tpm="1" if admission.org_tpm else "0",
        balance_hold=balance_hold,
        cap_hold="1" if admission.cap_tracked else "0",
        marked="1" if admission.open_requests else "0",
    )


def _settle_slice(admission: Admission, piece: Slice, cost_micro: int) -> list[str] | None:
    """Account a slice-reserved request in the worker's slice; the settlement script's slice arguments, or None
    when Redis has nothing to change (nothing was spent and the slice's hold stays)."""
    reserved = admission.reserved_micro
    piece.outstanding -= reserved
    if not piece.closed:
        piece.remaining += reserved - cost_micro
    if piece.remaining + piece.outstanding < 0:  # cost more than the slice held: Redis takes at most the hold
        piece.remaining = -piece.outstanding
    last = piece.closed and piece.outstanding == 0
    if cost_micro == 0 and not last:
        return None
    now = time.time()
    piece.valid_until = now + HOLD_SECONDS - 60
    return slice_settle(slice_id=piece.id, slice_deadline=f"{now + HOLD_SECONDS:.3f}", slice_last="1" if last else "0")


async def settle(admission: Admission, *, actual_tokens: int, actual_cost: Decimal | None) -> None:
    """Replace the reservation with the real usage (once); with zero usage this is a release."""
    if admission.settled:
        return
    admission.settled = True
    cost_micro = to_micro(actual_cost) if actual_cost else 0
    if admission.slice is not None:
        extra = _settle_slice(admission, admission.slice, cost_micro)
        if extra is not None:
            await _SETTLE.acall(admission.keys, [*_settle_args(admission, actual_tokens, cost_micro), "", *extra])
        elif _only_marked(admission):
            await _settle_marker(admission, "", "")
        elif admission.open_requests:
            args = _settle_args(admission, actual_tokens, cost_micro, slice_settles=False)
            await _SETTLE.acall(admission.keys, args)
    elif _only_marked(admission):
        await _settle_marker(admission, "", "")
    elif admission.needs_settle:
        await _SETTLE.acall(admission.keys, _settle_args(admission, actual_tokens, cost_micro))


def _only_marked(admission: Admission) -> bool:
    """Nothing to adjust in Redis but the open marker: no token counters, and no hold (or a slice's, unchanged)."""
    if not admission.open_requests or admission.key_tpm or admission.org_tpm:
        return False
    return admission.slice is not None or not (admission.balance_tracked or admission.cap_tracked)


def _settle_marker(admission: Admission, stream: str, entry: bytes | str, later: bool = False) -> Awaitable[Any]:
    keys = [*admission.keys[_OPEN_KEYS], stream]
    return _SETTLE_MARKER.acall(keys, marker_args(request_id=admission.request_id, usage_entry=entry), later=later)


async def settle_and_record(
    admission: Admission | None, *, actual_tokens: int, actual_cost: Decimal | None, stream: str, entry: bytes
) -> None:
    """settle() and append ``entry`` to the usage ``stream`` in one round trip (the XADD alone without holds)."""
    send: Callable[[], Awaitable[Any]] = functools.partial(
        fredis().execute, "XADD", stream, "*", "r", entry, later=True
    )
    if admission is not None and not admission.settled:
        admission.settled = True
        cost_micro = to_micro(actual_cost) if actual_cost else 0
        extra: list[str] | None = []
        if admission.slice is not None:
            extra = _settle_slice(admission, admission.slice, cost_micro)
        if _only_marked(admission) and (extra is None or admission.slice is None):
            send = functools.partial(_settle_marker, admission, stream, entry, later=True)
        elif extra is not None and admission.needs_settle:
            args = [*_settle_args(admission, actual_tokens, cost_micro), entry, *extra]
            send = functools.partial(_SETTLE_RECORD.acall, [*admission.keys, stream], args, later=True)
        elif admission.open_requests:  # nothing to change but the marker and counters: removed with the record
            args = [*_settle_args(admission, actual_tokens, cost_micro, slice_settles=False), entry]
            send = functools.partial(_SETTLE_RECORD.acall, [*admission.keys, stream], args, later=True)
    try:
        await send()
    except REDIS_ERRORS:
        keep_until_redis_is_back(send)  # answered, so its usage is owed: sent again when Redis is back
        raise


async def release(admission: Admission) -> None:
    """Give back everything admission held, for a request that never reached a model."""
    await settle(admission, actual_tokens=0, actual_cost=None)


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("giving back a balance slice failed: %r", task.exception())
