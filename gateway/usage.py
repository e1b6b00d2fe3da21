"""The gateway's side of usage metering: one entry per request appended to the usage stream after the response.

Appending (XADD) happens after the response went out and never blocks it; ``metering.ingestion`` inserts the rows.
"""

from __future__ import annotations

import orjson

from gateway.store import fredis
from metering.ingestion import stream_key

__all__ = ["append", "stream_key"]


async def append(record: dict) -> None:
    """Queue one usage record (a JSON-able dict with UsageRecord field names plus ids)."""
    await fredis().execute("XADD", stream_key(), "*", "r", orjson.dumps(record))
