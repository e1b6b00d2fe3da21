"""Celery tasks of metering."""

from __future__ import annotations

from celery import shared_task

from metering.ingestion import ingest_all
from metering.open_requests import open_requests_sweep


@shared_task(name="metering.tasks.ingest_usage_task", ignore_result=True)
def ingest_usage_task() -> int:
    """Drain queued usage records into UsageRecord rows (beat runs it every few seconds)."""
    return ingest_all(consumer="celery-ingest")


@shared_task(name="metering.tasks.sweep_open_requests_task", ignore_result=True)
def sweep_open_requests_task() -> int:
    """Bill and release the open requests of gateway workers that died (beat, every ``USAGE_SWEEP_SECONDS``)."""
    return open_requests_sweep()
