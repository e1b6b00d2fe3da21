"""A service's timeline: status changes, scaling and meter events, written under the service's row lock.

Every write of a ``ServiceEvent`` goes through here. Meter events are billing's input: each change of the number
of billable (Running, ready) instances writes exactly one, and billing integrates them into instance time. Callers
hold the service row locked (``select_for_update``) and save the service themselves.

A message the platform writes is a ``deployments.texts.TIMELINE`` text: its code and parameters are stored with its
English rendering and it is shown in the reader's language; a cluster's own message is plain text, stored as it came.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from core.i18n import Text, stored_text
from deployments.models import EventKind, Service, ServiceEvent, ServiceStatus
from deployments.texts import TIMELINE

__all__ = ["EventKind", "event_record", "meter_set", "status_set"]


def event_record(
    *,
    service: Service,
    kind: EventKind,
    status: str = "",
    reason: str = "",
    message: str | Text = "",
    actor: Any = None,
    billable_instances: int | None = None,
    at: datetime | None = None,
) -> ServiceEvent:
    english, code, params = stored_text(message)
    return ServiceEvent.objects.create(
        service=service,
        created_at=at or timezone.now(),
        kind=kind,
        status=status,
        reason=reason[:100],
        message=english,
        message_code=code,
        message_params=params,
        actor=actor if getattr(actor, "pk", None) else None,
        billable_instances=billable_instances,
    )


def status_set(*, service: Service, status: str, reason: str = "", message: str | Text = "", actor: Any = None) -> bool:
    """Move ``service`` (locked by the caller) to ``status``; one status event per change. True if anything changed."""
    english, code, params = stored_text(message)
    if (
        service.status == status
        and service.status_reason == reason[:100]
        and (service.status_message, service.status_message_code, service.status_message_params)
        == (english, code, params)
    ):
        return False
    changed = service.status != status or service.status_reason != reason[:100]
    service.status, service.status_reason = status, reason[:100]
    service.status_message, service.status_message_code, service.status_message_params = english, code, params
    if status == ServiceStatus.RUNNING and service.running_since is None:
        service.running_since = timezone.now()
    if status == ServiceStatus.DELETED and service.deleted_at is None:
        service.deleted_at = timezone.now()
    if changed:
        event_record(service=service, kind=EventKind.STATUS, status=status, reason=reason, message=message, actor=actor)
    return True


def meter_set(*, service: Service, instances: int, since: datetime | None = None) -> bool:
    """Write a meter event when the billable instance count changes (exactly one per change).

    ``since``: the change happened earlier than now (instances found gone count from when they were last seen). It
    is never put before the service's latest meter event, so the meter stays in order.
    """
    if service.billed_instances == instances:
        return False
    service.billed_instances = instances
    if since is not None:
        latest = (
            service.events.filter(kind=EventKind.METER)
            .order_by("-created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        since = min(max(since, latest or since), timezone.now())
    event_record(
        service=service,
        kind=EventKind.METER,
        billable_instances=instances,
        message=TIMELINE("billable", n=instances),
        at=since,
    )
    return True
