"""Usage ingestion: the gateway appends one entry per request to a Redis stream; this inserts the rows.

Appending (XADD) happens after the response went out and never blocks it. The ingester reads with a consumer
group, inserts with the request id as primary key (``ON CONFLICT DO NOTHING``), then acknowledges and deletes the
entries: a consumer killed between insert and ack leaves its entries pending, another consumer claims them with
XAUTOCLAIM and re-inserts them without duplicates. The ingester also moves ``ApiKey.last_used_at`` forward, one
UPDATE per key and batch instead of one write per request.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from django.db import transaction
from django.db.models import Q

from core.redis import client as sredis
from core.redis import key as k

logger = logging.getLogger(__name__)

GROUP = "ingest"
CLAIM_IDLE_MS = 30_000


def stream_key() -> str:
    return k("usage")


def append_sync(record: dict) -> None:
    """Queue one usage record (a JSON-able dict with UsageRecord field names plus ids) from sync code."""
    sredis().xadd(stream_key(), {"r": orjson.dumps(record)})


def _ensure_group(client) -> None:
    try:
        client.xgroup_create(stream_key(), GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists
        if "BUSYGROUP" not in str(exc):
            raise


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def _rows(payloads: list[dict]):
    from django.contrib.auth import get_user_model

    from catalog.models import CatalogModel
    from deployments.models import Service
    from metering.models import UsageRecord
    from tenancy.models import ApiKey, Organization

    def existing(model, ids):
        ids = {i for i in ids if i is not None}
        return {str(pk) for pk in model.objects.filter(pk__in=ids).values_list("pk", flat=True)} if ids else set()

    orgs = existing(Organization, (p["org_id"] for p in payloads))
    keys = existing(ApiKey, (p.get("api_key_id") for p in payloads))
    services = existing(Service, (p.get("service_id") for p in payloads))
    models = existing(CatalogModel, (p.get("catalog_model_id") for p in payloads))
    users = existing(get_user_model(), (p.get("user_id") for p in payloads))
    rows = []
    for p in payloads:
        if p["org_id"] not in orgs:
            logger.warning("usage record %s dropped: organization %s no longer exists", p["id"], p["org_id"])
            continue

        def ref(name, known):
            value = p.get(name)  # noqa: B023
            return value if value is not None and str(value) in known else None

        rows.append(
            UsageRecord(
                id=uuid.UUID(p["id"]),
                org_id=p["org_id"],
                api_key_id=ref("api_key_id", keys),
                user_id=ref("user_id", users),
                source=p["source"],
                endpoint=p["endpoint"],
                model_id=p["model_id"][:200],
                catalog_model_id=ref("catalog_model_id", models),
                service_id=ref("service_id", services),
                public=p["public"],
                replica=p.get("replica", "")[:253],
                prompt_tokens=p["prompt_tokens"],
                completion_tokens=p["completion_tokens"],
                cached_tokens=p.get("cached_tokens", 0),
                latency_ms=p["latency_ms"],
                ttft_ms=p.get("ttft_ms"),
                status=p["status"],
                http_status=p["http_status"],
                error_code=(p.get("error_code") or "")[:64],
                stream=p["stream"],
                prompt_hash=p.get("prompt_hash", ""),
                params=p.get("params") or {},
                served_model_version=(p.get("served_model_version") or "")[:200],
                cost=Decimal(p["cost"]) if p.get("cost") is not None else None,
                currency=p.get("currency") or "",
                started_at=_ts(p["started_at"]),
                finished_at=_ts(p["finished_at"]),
            )
        )
    return rows


def _insert(payloads: list[dict]) -> int:
    from metering.models import UsageRecord
    from tenancy.models import ApiKey

    rows = _rows(payloads)
    last_used: dict[str, datetime] = {}
    for row in rows:
        if row.api_key_id is not None:
            key = str(row.api_key_id)
            if key not in last_used or row.finished_at > last_used[key]:
                last_used[key] = row.finished_at
    with transaction.atomic():
        created = UsageRecord.objects.bulk_create(rows, ignore_conflicts=True)
        for key_id, when in last_used.items():
            ApiKey.objects.filter(pk=key_id).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=when)).update(
                last_used_at=when
            )
    return len(created)


def ingest_batch(
    *, consumer: str | None = None, count: int = 500, block_ms: int | None = None, claim_idle_ms: int = CLAIM_IDLE_MS
) -> int:
    """Insert one batch of queued usage records; returns the number of stream entries handled."""
    client = sredis()
    consumer = consumer or default_consumer()
    _ensure_group(client)
    # Entries another consumer read but never acknowledged (it died) come first.
    claimed = client.xautoclaim(stream_key(), GROUP, consumer, min_idle_time=claim_idle_ms, start_id="0-0", count=count)
    entries = [e for e in claimed[1] if e and e[1]]
    dead = [e[0] for e in claimed[1] if e and not e[1]] + list(claimed[2] if len(claimed) > 2 else [])
    if not entries:
        response = client.xreadgroup(GROUP, consumer, {stream_key(): ">"}, count=count, block=block_ms)
        if not isinstance(response, list | None):  # this client speaks RESP2: [[stream, [(id, fields), ...]]]
            raise TypeError(f"unexpected XREADGROUP reply: {type(response).__name__}")
        entries = [e for e in (response[0][1] if response else []) if e[1]]
    payloads, ids = [], [e[0] for e in entries]
    for entry_id, fields in entries:
        try:
            payloads.append(orjson.loads(fields[b"r"]))
        except (KeyError, orjson.JSONDecodeError):
            logger.error("usage stream entry %s is unreadable and is dropped: %r", entry_id, fields)
    if payloads:
        _insert(payloads)
    done = ids + dead
    if done:
        client.xack(stream_key(), GROUP, *done)
        client.xdel(stream_key(), *done)
    return len(ids)


def ingest_all(**kwargs) -> int:
    """Drain the stream (what is queued now); returns the number of entries handled."""
    total = 0
    while True:
        handled = ingest_batch(**kwargs)
        total += handled
        if not handled:
            return total


def pending_count() -> int:
    client = sredis()
    _ensure_group(client)
    return client.xlen(stream_key())
