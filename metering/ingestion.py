"""Usage ingestion: the gateway appends one entry per request to a Redis stream; this inserts the rows.

Appending (XADD) happens after the response went out and never blocks it. The ingester reads with a consumer
group, inserts with the request id as primary key (``ON CONFLICT DO NOTHING``), then acknowledges and deletes the
entries: a consumer killed between insert and ack leaves its entries pending, another consumer claims them with
XAUTOCLAIM and re-inserts them without duplicates. The ingester also moves ``ApiKey.last_used_at`` forward, one
UPDATE per key and batch instead of one write per request.

One bad entry never holds up the others. Every payload is made storable first (``storable``: NUL, which
PostgreSQL's ``text`` and ``jsonb`` refuse, is replaced in every string; counters are clamped to their column's
range). A batch insert that still fails degrades to one savepoint per entry: the good entries are stored and
acknowledged, only the failing one stays pending. An entry whose insert failed ``USAGE_MAX_ATTEMPTS`` times (the
stream's delivery count), or that cannot be read at all, moves to the dead-letter stream with the error, is
acknowledged and deleted, and is logged at ERROR; a platform admin re-queues it from the ingestion page after a
fix (``usage_dead_letter_retry``). Each batch reads new entries as well as re-claimed ones, so entries that keep
failing never starve later ones. A connection-level database failure is not the entry's fault: it fails the
whole batch, which stays pending and is retried without being dead-lettered for it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import Q

from core.redis import client as sredis
from core.redis import key as k

logger = logging.getLogger(__name__)

GROUP = "ingest"
CLAIM_IDLE_MS = 30_000
INTEGER_MAX = 2**31 - 1  # PositiveIntegerField is PostgreSQL's integer
SMALLINT_MAX = 2**15 - 1


def stream_key() -> str:
    return k("usage")


def dead_letter_key() -> str:
    return k("usage", "dead")


def append_sync(record: dict) -> None:
    """Queue one usage record (a JSON-able dict with UsageRecord field names plus ids) from sync code."""
    sredis().xadd(stream_key(), {"r": orjson.dumps(record)})


def ensure_group(client) -> None:
    try:
        client.xgroup_create(stream_key(), GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists
        if "BUSYGROUP" not in str(exc):
            raise


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def storable(value):
    """The value with NUL replaced (by U+FFFD) in every string, dict keys included, at any depth."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def _count(value, maximum: int = INTEGER_MAX) -> int:
    return min(max(int(value), 0), maximum)


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def _known_ids(payloads) -> dict[str, set[str]]:
    """Per reference field, the ids that still exist (a key or service deleted meanwhile becomes NULL)."""
    from django.contrib.auth import get_user_model

    from catalog.models import CatalogModel
    from deployments.models import Service
    from tenancy.models import ApiKey, Organization

    def existing(model, field):
        ids = {str(p.get(field)) for p in payloads if p.get(field) is not None}
        return {str(pk) for pk in model.objects.filter(pk__in=ids).values_list("pk", flat=True)} if ids else set()

    return {
        "org_id": existing(Organization, "org_id"),
        "api_key_id": existing(ApiKey, "api_key_id"),
        "service_id": existing(Service, "service_id"),
        "catalog_model_id": existing(CatalogModel, "catalog_model_id"),
        "user_id": existing(get_user_model(), "user_id"),
    }


def _row(p: dict, known: dict[str, set[str]]):
    """The UsageRecord of one payload, or None when its organization no longer exists."""
    from metering.models import UsageRecord

    if str(p["org_id"]) not in known["org_id"]:
        logger.warning("usage record %s dropped: organization %s no longer exists", p["id"], p["org_id"])
        return None

    def ref(name):
        value = p.get(name)
        return value if value is not None and str(value) in known[name] else None

    return UsageRecord(
        id=uuid.UUID(p["id"]),
        org_id=p["org_id"],
        api_key_id=ref("api_key_id"),
        user_id=ref("user_id"),
        source=p["source"],
        endpoint=p["endpoint"],
        model_id=p["model_id"][:200],
        catalog_model_id=ref("catalog_model_id"),
        service_id=ref("service_id"),
        public=p["public"],
        replica=p.get("replica", "")[:253],
        prompt_tokens=_count(p["prompt_tokens"]),
        completion_tokens=_count(p["completion_tokens"]),
        cached_tokens=_count(p.get("cached_tokens", 0)),
        latency_ms=_count(p["latency_ms"]),
        ttft_ms=_count(p["ttft_ms"]) if p.get("ttft_ms") is not None else None,
        status=p["status"],
        http_status=_count(p["http_status"], SMALLINT_MAX),
        error_code=(p.get("error_code") or "")[:64],
        stream=p["stream"],
        prompt_hash=(p.get("prompt_hash") or "")[:64],
        params=p.get("params") or {},
        served_model_version=(p.get("served_model_version") or "")[:200],
        cost=Decimal(p["cost"]) if p.get("cost") is not None else None,
        currency=p.get("currency") or "",
        started_at=_ts(p["started_at"]),
        finished_at=_ts(p["finished_at"]),
    )


def _store(payloads: dict[str, dict]) -> tuple[dict[str, str], dict[str, str]]:
    """Insert the payloads (by entry id); returns (entries that can never be stored, entries whose insert failed)."""
    from metering.models import UsageRecord
    from tenancy.models import ApiKey

    known = _known_ids(payloads.values())
    rows, unusable, failed = {}, {}, {}
    for entry_id, payload in payloads.items():
        try:
            row = _row(payload, known)
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            unusable[entry_id] = f"malformed usage record: {exc!r}"
            continue
        if row is not None:
            rows[entry_id] = row
    with transaction.atomic():
        try:
            with transaction.atomic():
                UsageRecord.objects.bulk_create(list(rows.values()), ignore_conflicts=True)
            stored = list(rows.values())
        except (DataError, IntegrityError) as exc:
            # One entry PostgreSQL refuses fails the whole statement: retry one savepoint per entry.
            logger.warning("usage batch of %d entries refused (%s); inserting them one by one", len(rows), exc)
            stored = []
            for entry_id, row in rows.items():
                try:
                    with transaction.atomic():
                        UsageRecord.objects.bulk_create([row], ignore_conflicts=True)
                except (DataError, IntegrityError) as error:
                    failed[entry_id] = str(error).strip()
                else:
                    stored.append(row)
        last_used: dict[str, datetime] = {}
        for row in stored:
            if row.api_key_id is not None:
                key = str(row.api_key_id)
                if key not in last_used or row.finished_at > last_used[key]:
                    last_used[key] = row.finished_at
        for key_id, when in last_used.items():
            ApiKey.objects.filter(pk=key_id).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=when)).update(
                last_used_at=when
            )
    return unusable, failed


def _deliveries(client, entry_id: str) -> int:
    pending = client.xpending_range(stream_key(), GROUP, min=entry_id, max=entry_id, count=1)
    return int(pending[0]["times_delivered"]) if pending else 1


def _dead_letter(client, entry_id: str, raw: bytes, error: str) -> None:
    client.xadd(dead_letter_key(), {"entry": entry_id, "error": error[:2000], "r": raw})
    logger.error("ALERT usage stream entry %s moved to the dead letters: %s", entry_id, error)


def as_text(value) -> str:
    """A stream id or field value as text (this client answers bytes)."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def ingest_batch(
    *, consumer: str | None = None, count: int = 500, block_ms: int | None = None, claim_idle_ms: int = CLAIM_IDLE_MS
) -> int:
    """Insert one batch of queued usage records; returns the number of stream entries done with (acknowledged)."""
    client = sredis()
    consumer = consumer or default_consumer()
    ensure_group(client)
    # Entries another consumer read but never acknowledged (it died, or their insert failed) ...
    claimed = client.xautoclaim(stream_key(), GROUP, consumer, min_idle_time=claim_idle_ms, start_id="0-0", count=count)
    entries = [e for e in claimed[1] if e and e[1]]
    gone = [e[0] for e in claimed[1] if e and not e[1]] + list(claimed[2] if len(claimed) > 2 else [])
    # ... and new ones, always: entries that keep failing must not starve later ones.
    response = client.xreadgroup(GROUP, consumer, {stream_key(): ">"}, count=count, block=None if entries else block_ms)
    if not isinstance(response, list | None):  # this client speaks RESP2: [[stream, [(id, fields), ...]]]
        raise TypeError(f"unexpected XREADGROUP reply: {type(response).__name__}")
    entries += [e for e in (response[0][1] if response else []) if e[1]]
    raws = {as_text(entry_id): fields.get(b"r", b"") for entry_id, fields in entries}
    payloads, unusable = {}, {}
    for entry_id, raw in raws.items():
        try:
            payloads[entry_id] = storable(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            unusable[entry_id] = f"unreadable entry: {exc}"
    malformed, failed = _store(payloads)
    unusable |= malformed
    for entry_id, error in failed.items():
        attempts = _deliveries(client, entry_id)
        if attempts >= settings.USAGE_MAX_ATTEMPTS:
            unusable[entry_id] = f"refused {attempts} times: {error}"
        else:
            logger.warning("usage stream entry %s refused (attempt %d): %s", entry_id, attempts, error)
    for entry_id, error in unusable.items():
        _dead_letter(client, entry_id, raws[entry_id], error)
    done = [entry_id for entry_id in raws if entry_id not in failed or entry_id in unusable] + gone
    if done:
        client.xack(stream_key(), GROUP, *done)
        client.xdel(stream_key(), *done)
    return len(done) - len(gone)


def ingest_all(**kwargs) -> int:
    """Drain the stream (what is queued now); returns the number of entries done with."""
    total = 0
    while True:
        handled = ingest_batch(**kwargs)
        total += handled
        if not handled:
            return total


def pending_count() -> int:
    client = sredis()
    ensure_group(client)
    return client.xlen(stream_key())


def usage_dead_letter_retry(*, entry_id: str, actor) -> str:
    """Queue a dead-lettered entry again (after a fix); returns the new stream entry id.

    The record keeps its request id, so a retry of something stored meanwhile inserts nothing twice.
    """
    from django.utils.translation import gettext as _

    from core.errors import ApplicationError
    from tenancy.services import audit_record

    client = sredis()
    found = client.xrange(dead_letter_key(), min=entry_id, max=entry_id, count=1)
    if not found:
        message = _("No dead-lettered usage entry %(id)s.") % {"id": entry_id}
        raise ApplicationError(message, code="not_found", status=404)
    fields: dict = found[0][1] or {}
    new_id = as_text(client.xadd(stream_key(), {"r": fields.get(b"r", b"")}))
    client.xdel(dead_letter_key(), entry_id)
    audit_record(
        org=None,
        actor=actor,
        action="usage.dead_letter_retried",
        data={"dead_letter": entry_id, "entry": as_text(fields.get(b"entry", b"")), "requeued_as": new_id},
    )
    return new_id
