"""The autoscaler's decision: how many instances a service should run now, and why. Pure: no database, no clock.

Inputs per service and tick: its policy (``policy.ScalingPolicy``), the instances it has now, the gateway's serving
signals (``serving_signals.ServingSignals``: in-flight requests, held ones, last arrival, recent TTFTs), what its
replicas' ``/metrics`` said (``replica_metrics.ServiceMetrics``, or None), whether a held request asked to wake it,
the time, and the service's ``History`` (kept by the loop between ticks). Output: a ``Decision`` with the desired
count and its reason as a timeline text (``deployments.texts.TIMELINE``), or the same count and no reason.

- **Demand** is the larger of the gateway's in-flight count (every request admitted and not finished, by all
  gateway workers, including those held while the service wakes) and the replicas' running plus waiting.
- **Raw recommendation** per target: ``concurrency``, demand over the target per instance; ``ttft_p95``, the
  current count scaled by p95 over the goal (the replicas' histogram over the last interval, else the gateway's
  samples) while requests run; ``kv_cache``, the count scaled by the busiest replica's KV-cache usage over the target.
  Each is rounded up and kept within the policy's bounds.
- **Scale-up** happens at once. **Scale-down** is stabilised: the loop keeps every recommendation of the last
  ``scale_down_window_s`` and goes down only to the highest of them, and only once it has watched a whole window
  (a restarted loop does not scale down on its first tick).
- **Panic**: a burst (demand at least ``PANIC_FACTOR`` times what the running instances are meant to carry) scales
  up at once to the recommendation and forbids any scale-down for ``PANIC_HOLD_S`` after the burst was last seen.
- **Zero**: with ``min_instances`` 0, a service with no request for ``idle_to_zero_s`` (nothing in flight, nothing
  held, the last arrival that long ago) goes to 0. **Wake**: at 0, any demand, a held request or a wake request
  brings it to at least 1 at once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from core.i18n import Text
from deployments.models import ScalingMode, ScalingTarget
from deployments.policy import ScalingPolicy
from deployments.replica_metrics import ServiceMetrics
from deployments.serving_signals import ServingSignals
from deployments.texts import TIMELINE

PANIC_FACTOR = 2
PANIC_HOLD_S = 60.0
# Requests per instance assumed by a TTFT or KV-cache target while it has no measure (at zero, before any sample).
ASSUMED_PER_INSTANCE = 8


@dataclass
class History:
    """What the loop remembers of one service between ticks."""

    since: float  # when the loop started watching it
    recommendations: deque[tuple[float, int, Text | None]] = field(default_factory=deque)  # (time, count, why)
    panic_until: float = 0.0


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: Text | None = None  # None: nothing to change
    panic: bool = False


def demand_of(signals: ServingSignals, metrics: ServiceMetrics | None) -> int:
    scraped = metrics.running + metrics.waiting if metrics is not None else 0
    return max(signals.demand, scraped)


def _ttft_p95(signals: ServingSignals, metrics: ServiceMetrics | None) -> int | None:
    if metrics is not None and metrics.ttft_p95_ms is not None:
        return metrics.ttft_p95_ms
    return signals.ttft_percentile(95)


def _recommend(
    policy: ScalingPolicy, current: int, demand: int, signals: ServingSignals, metrics: ServiceMetrics | None
) -> tuple[float, Text | None]:
    """The instances the target asks for (unrounded, unbounded) and the words for it (saying ``current → n``)."""
    target = max(policy.target_value, 1)
    if demand == 0:
        return 0.0, None
    if policy.scaling_target == ScalingTarget.TTFT_P95 and current > 0:
        p95 = _ttft_p95(signals, metrics)
        if p95 is not None:
            need = current * p95 / target
            return need, TIMELINE("autoscale_ttft", a=current, n=math.ceil(need), p95=p95, goal=target)
    if policy.scaling_target == ScalingTarget.KV_CACHE and current > 0 and metrics is not None:
        if metrics.kv_cache_usage is not None:
            usage = round(metrics.kv_cache_usage * 100)
            need = current * usage / target
            return need, TIMELINE("autoscale_kv_cache", a=current, n=math.ceil(need), usage=usage, target=target)
    per_instance = target if policy.scaling_target == ScalingTarget.CONCURRENCY else ASSUMED_PER_INSTANCE
    need = demand / per_instance
    return need, TIMELINE("autoscale_demand", a=current, n=math.ceil(need), demand=demand, target=per_instance)


_DOWN = {"autoscale_demand": "autoscale_down_demand", "autoscale_ttft": "autoscale_down_ttft"}
_DOWN["autoscale_kv_cache"] = "autoscale_down_kv_cache"


def decide(
    *,
    policy: ScalingPolicy,
    current: int,
    signals: ServingSignals,
    metrics: ServiceMetrics | None,
    wake: bool,
    now: float,
    history: History,
) -> Decision:
    """The desired instance count of one service at ``now`` (unix seconds), and why if it differs from ``current``."""
    if policy.scaling_mode != ScalingMode.AUTOSCALE:
        return Decision(current)
    low, high = policy.min_instances, max(policy.max_instances, policy.min_instances, 1)
    demand = demand_of(signals, metrics)
    need, why = _recommend(policy, current, demand, signals, metrics)
    raw = math.ceil(need)
    if current > 0 and need >= PANIC_FACTOR * current:  # a burst: at least twice what the instances carry
        history.panic_until = now + PANIC_HOLD_S
    panic = now < history.panic_until
    window = policy.scale_down_window_s

    if current == 0:
        if demand > 0 or signals.held > 0 or wake:
            desired = min(max(raw, 1, low), high)
            history.recommendations.clear()
            history.recommendations.append((now, desired, None))
            return Decision(desired, TIMELINE("autoscale_wake", n=desired))
        if low == 0:
            return Decision(0)
    floor = low
    if low == 0:
        last = signals.last_request_at.timestamp() if signals.last_request_at is not None else history.since
        idle_for = now - last
        if demand > 0 or signals.held > 0 or idle_for < policy.idle_to_zero_s or panic:
            floor = 1
        else:
            history.recommendations.clear()
            return Decision(0, TIMELINE("autoscale_idle", a=current, n=int(idle_for // 60)))

    bounded = min(max(raw, floor), high)
    history.recommendations.append((now, bounded, why))
    while history.recommendations and history.recommendations[0][0] < now - window:
        history.recommendations.popleft()

    if current > high or current < low:  # the bounds moved: follow them at once
        desired = min(max(current, low, bounded if bounded > current else low), high)
        return Decision(desired, TIMELINE("autoscale_bounds", a=current, n=desired, low=low, high=high), panic)
    if bounded > current:
        if panic:
            why = TIMELINE("autoscale_panic", a=current, n=bounded, demand=demand, hold=int(PANIC_HOLD_S))
        elif why is not None:
            why = _with_counts(why, current, bounded)
        else:
            why = TIMELINE("autoscale_bounds", a=current, n=bounded, low=low, high=high)
        return Decision(bounded, why, panic)
    if bounded == current or panic or now - history.since < window:  # no scale-down before a whole window was seen
        return Decision(current, None, panic)
    _at, peak, peak_why = max(history.recommendations, key=lambda r: r[1])
    if peak >= current:
        return Decision(current)
    if peak_why is None:
        return Decision(peak, TIMELINE("autoscale_down_quiet", a=current, n=peak, window=window))
    down = _DOWN[peak_why.code]
    return Decision(peak, TIMELINE(down, **{**peak_why.params, "a": current, "n": peak, "window": window}))


def _with_counts(text: Text, a: int, n: int) -> Text:
    """``text`` saying ``a → n`` (a recommendation's words, used for the change actually made)."""
    return TIMELINE(text.code, **{**text.params, "a": a, "n": n})
