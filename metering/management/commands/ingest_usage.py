"""``python manage.py ingest_usage``: the usage-stream consumer (run one or more; each claims dead peers' work)."""

from __future__ import annotations

import signal
import time

from django.core.management.base import BaseCommand

from metering.ingestion import default_consumer, ingest_all, ingest_batch


class Command(BaseCommand):
    help = "Insert queued /v1 usage records into UsageRecord rows (idempotent; safe to run several)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="drain what is queued now and exit")
        parser.add_argument("--consumer", default=None, help="consumer name in the group (default host-pid)")
        parser.add_argument("--batch", type=int, default=500)

    def handle(self, *args, once, consumer, batch, **options):
        consumer = consumer or default_consumer()
        if once:
            self.stdout.write(f"ingested {ingest_all(consumer=consumer, count=batch)} usage records")
            return
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        while not stopping:
            try:
                ingest_batch(consumer=consumer, count=batch, block_ms=1000)
            except Exception as exc:  # keep consuming after a transient database or Redis failure
                self.stderr.write(f"ingest failed: {exc!r}; retrying in 2s")
                time.sleep(2)
