"""Celery tasks of metering."""

from __future__ import annotations

from celery import shared_task

from metering.ingestion import ingest_all


@shared_task(name="metering.tasks.ingest_usage_task", ignore_result=True)
def ingest_usage_task() -> int:
    """Drain queued usage records into UsageRecord rows (beat runs it every few seconds)."""
    return ingest_all(consumer="celery-ingest")
