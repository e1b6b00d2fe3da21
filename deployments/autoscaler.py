"""The autoscaler loop (``manage.py autoscale``): one leader, a tick every ``AUTOSCALE_TICK_S``, wake at once.

However many loops run, one leads: it holds the Redis lock ``autoscaler:leader`` (``SET NX`` with an expiry of
``LEASE_TICKS`` ticks, renewed every tick by a script that checks it is still the holder); the others try to take it
every tick, so a standby leads within a lease of the leader's death. Every tick the leader reads the autoscaled
services (running or Idle), their serving signals (``serving_signals``, one Redis round trip), their replicas'
``/metrics`` (``replica_metrics``: at once, with timeouts; never on the request path), and asks
``autoscaling.decide`` for each; a changed count goes through ``services.service_autoscale`` (the manual scale's
path: desired state, generation, the reconcile task, the decision and its reason on the timeline).

Between ticks the leader blocks on ``wake:notify`` (BLPOP): a request held for an Idle service pushes there, and
the services in the ``wake`` set (``serving_signals.wake_requests_take``) are decided at once, not at the next tick.

A scale-up whose instances cannot be placed (no free GPUs: ``ApplicationError`` with code ``no_capacity``) is said on
the service (``service_autoscale_blocked``: its reason, the error and when it is tried again) and retried with
backoff (a tick, doubling to ``MAX_BACKOFF_S``); nothing else changes meanwhile, so nothing flaps. The words go away
once the scale-up goes through or demand no longer asks for it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import close_old_connections

from core import redis as platform_redis
from core.errors import ApplicationError
from deployments import serving_signals
from deployments.autoscaling import Decision, History, decide
from deployments.models import ScalingMode, Service, ServiceStatus
from deployments.policy import ScalingPolicy
from deployments.replica_metrics import Scraper
from deployments.services import service_autoscale, service_autoscale_blocked, service_autoscale_unblocked

log = logging.getLogger(__name__)

LEASE_TICKS = 3
# One BLPOP blocks at most this long (the loop waits again until the tick is due): redis-py's client gives up on a
# read after its socket timeout (5 s by default), and a wait as long as the tick would end in a TimeoutError.
WAKE_BLOCK_S = 1.0
MAX_BACKOFF_S = 300.0
# Autoscaled services in these statuses are decided on; the others wait for a person or the reconcile loop.
DECIDED_STATUSES = (
    ServiceStatus.PENDING,
    ServiceStatus.CREATING,
    ServiceStatus.STARTING,
    ServiceStatus.RUNNING,
    ServiceStatus.SCALING,
    ServiceStatus.IDLE,
)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def leader_key() -> str:
    return platform_redis.key("autoscaler", "leader")


@dataclass
class _Backoff:
    next_try: float
    delay: float


class Autoscaler:
    """One autoscaler loop; ``run`` until ``stopping()`` says so. ``clock``: unix seconds (tests pass their own)."""

    def __init__(self, *, tick_s: float | None = None, clock: Callable[[], float] = time.time, name: str = ""):
        self.tick_s = float(tick_s if tick_s is not None else settings.AUTOSCALE_TICK_S)
        self.clock = clock
        self.identity = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scraper = Scraper()
        self.histories: dict[str, History] = {}
        self.backoffs: dict[str, _Backoff] = {}
        self.leading = False

    # --- leadership ------------------------------------------------------------------------------------------

    def lead(self) -> bool:
        """Take or keep the leader's lock; True while this loop leads."""
        client = platform_redis.client()
        lease_ms = max(int(self.tick_s * LEASE_TICKS * 1000), 1000)
        try:
            held = client.eval(_RENEW, 1, leader_key(), self.identity, lease_ms) == 1
            if not held:
                held = bool(client.set(leader_key(), self.identity, nx=True, px=lease_ms))
        except redis.exceptions.RedisError as exc:
            log.warning("autoscaler %s cannot reach Redis: %r", self.identity, exc)
            held = False
        if held and not self.leading:
            log.info("autoscaler %s leads", self.identity)
            self.histories.clear()  # watched from now on: no scale-down before a whole window is seen
            self.backoffs.clear()
        elif not held and self.leading:
            log.info("autoscaler %s no longer leads", self.identity)
        self.leading = held
        return held

    def resign(self) -> None:
        try:
            platform_redis.client().eval(_RESIGN, 1, leader_key(), self.identity)
        except redis.exceptions.RedisError:
            pass  # the lease expires by itself
        self.leading = False

    # --- one tick --------------------------------------------------------------------------------------------

    def tick(self, *, woken: Iterable[str] = (), only: Iterable[str] | None = None) -> dict[str, Decision]:
        """Decide (and apply) for every autoscaled service, or ``only`` these; ``woken``: ids a request waits for."""
        close_old_connections()
        now = self.clock()
        woken = {str(i) for i in woken}
        rows = Service.objects.filter(
            scaling_mode=ScalingMode.AUTOSCALE, desired_running=True, status__in=DECIDED_STATUSES
        ).select_related("cluster")
        if only is not None:
            rows = rows.filter(pk__in=list(only))
        services = list(rows)
        ids = [str(s.pk) for s in services]
        signals = serving_signals.signals_read(ids)
        metrics = self.scraper.scrape([str(s.pk) for s in services if s.instances > 0]) if services else {}
        decisions: dict[str, Decision] = {}
        for service in services:
            sid = str(service.pk)
            history = self.histories.get(sid)
            if history is None:
                history = self.histories[sid] = History(since=now)
            decision = decide(
                policy=ScalingPolicy.of(service),
                current=service.instances,
                signals=signals.get(sid, serving_signals.ServingSignals()),
                metrics=metrics.get(sid),
                wake=sid in woken,
                now=now,
                history=history,
            )
            decisions[sid] = decision
            self._apply(service, decision, now)
        if only is None:
            for gone in set(self.histories) - set(ids):
                del self.histories[gone]
        return decisions

    def _apply(self, service: Service, decision: Decision, now: float) -> None:
        sid = str(service.pk)
        if decision.desired <= service.instances:
            self.backoffs.pop(sid, None)
            if service.status_reason == "NoCapacityToScale":
                service_autoscale_unblocked(service_id=sid)
        if decision.desired == service.instances or decision.reason is None:
            return
        backoff = self.backoffs.get(sid)
        if decision.desired > service.instances and backoff is not None and now < backoff.next_try:
            return  # a scale-up that could not be placed waits for its retry
        try:
            service_autoscale(service_id=sid, instances=decision.desired, message=decision.reason)
        except ApplicationError as exc:
            if exc.code != "no_capacity":
                log.error("autoscaling %s to %d refused: %s", service, decision.desired, exc)
                return
            delay = min(backoff.delay * 2, MAX_BACKOFF_S) if backoff is not None else self.tick_s
            self.backoffs[sid] = _Backoff(next_try=now + delay, delay=delay)
            service_autoscale_blocked(
                service_id=sid, want=decision.desired, error=str(exc.message), retry_in_s=max(int(delay), 1)
            )
            log.warning("autoscaling %s to %d: %s (again in %.0f s)", service, decision.desired, exc, delay)
            return
        self.backoffs.pop(sid, None)
        if service.status_reason == "NoCapacityToScale":
            service_autoscale_unblocked(service_id=sid)
        log.info("autoscaled %s: %s", service, decision.reason.english())

    # --- the loop --------------------------------------------------------------------------------------------

    def wait_for_wake(self, timeout: float) -> list[str]:
        """Block until a wake request (``wake:notify``) or ``timeout``; the service ids to wake (may be empty)."""
        if timeout <= 0:
            return serving_signals.wake_requests_take()
        try:
            platform_redis.client().blpop([serving_signals.wake_notify_key()], timeout=min(timeout, WAKE_BLOCK_S))
        except redis.exceptions.RedisError as exc:
            log.warning("autoscaler cannot wait on Redis: %r", exc)
            time.sleep(min(timeout, 1.0))
            return []
        return serving_signals.wake_requests_take()

    def run(self, stopping: Callable[[], bool]) -> None:
        try:
            while not stopping():
                started = time.monotonic()
                if not self.lead():
                    time.sleep(self.tick_s)
                    continue
                try:
                    self.tick(woken=serving_signals.wake_requests_take())
                except Exception:  # a bad tick (database restarting, say) is logged; the next one tries again
                    log.exception("autoscaler tick failed")
                while not stopping() and (left := self.tick_s - (time.monotonic() - started)) > 0:
                    woken = self.wait_for_wake(left)
                    if woken:
                        try:
                            self.tick(woken=woken, only=woken)
                        except Exception:
                            log.exception("autoscaler wake failed")
        finally:
            self.resign()
