"""The autoscaler's decisions from synthetic signal series (``deployments.autoscaling.decide``): scale-up at once,
stabilised scale-down, panic on bursts, scale to zero after the idle period, wake from zero, the other targets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import translation

from deployments.autoscaling import PANIC_HOLD_S, History, decide
from deployments.models import ScalingMode, ScalingTarget
from deployments.policy import ScalingPolicy
from deployments.replica_metrics import ServiceMetrics
from deployments.serving_signals import ServingSignals
from deployments.texts import TIMELINE

T0 = 1_800_000_000.0


def signals(inflight: int = 0, *, held: int = 0, last: float | None = T0, ttft: tuple[int, ...] = ()) -> ServingSignals:
    at = datetime.fromtimestamp(last, tz=UTC) if last is not None else None
    return ServingSignals(inflight=inflight, held=held, last_request_at=at, ttft_ms=ttft)


def auto(**fields) -> ScalingPolicy:
    """An autoscaling policy with the given fields (the rest: the defaults)."""
    return ScalingPolicy(scaling_mode=ScalingMode.AUTOSCALE, **fields)


class Run:
    """A service driven through a series of ticks, applying every decision as the loop would."""

    def __init__(self, policy: ScalingPolicy, current: int, *, since: float = T0 - 3600):
        self.policy, self.current = policy, current
        self.history = History(since=since)
        self.reasons: list[str] = []

    def tick(self, now: float, sig: ServingSignals, metrics: ServiceMetrics | None = None, wake: bool = False) -> int:
        decision = decide(
            policy=self.policy,
            current=self.current,
            signals=sig,
            metrics=metrics,
            wake=wake,
            now=now,
            history=self.history,
        )
        if decision.reason is not None:
            assert decision.desired != self.current
            self.reasons.append(decision.reason.english())
            self.current = decision.desired
        else:
            assert decision.desired == self.current
        return self.current


CONCURRENCY = auto(
    min_instances=1,
    max_instances=10,
    target_value=8,
    scale_down_window_s=300,
    idle_to_zero_s=600,
)


def test_fixed_mode_never_changes_anything():
    run = Run(ScalingPolicy(scaling_mode=ScalingMode.FIXED, min_instances=1, max_instances=10), 2)
    assert run.tick(T0, signals(500)) == 2


def test_scale_up_is_immediate_and_says_why():
    run = Run(CONCURRENCY, 2)
    assert run.tick(T0, signals(30)) == 4
    assert run.reasons == ["2 → 4: 30 requests in flight or waiting, target 8 per instance"]


def test_the_replicas_waiting_requests_count_as_demand():
    run = Run(CONCURRENCY, 2)
    scraped = ServiceMetrics(replicas=2, running=16, waiting=22, kv_cache_usage=0.5, ttft_p95_ms=None)
    assert run.tick(T0, signals(10), scraped) == 5  # 38 in the engines beat the gateway's 10


def test_scale_up_stops_at_the_maximum():
    run = Run(CONCURRENCY, 2)
    assert run.tick(T0, signals(31)) == 4
    assert run.tick(T0 + 5, signals(400)) == 10


def test_scale_down_waits_until_the_whole_window_shows_lower_demand():
    run = Run(CONCURRENCY, 4)
    for offset in range(-600, 0, 60):  # ten minutes at 32 requests: 4 instances
        assert run.tick(T0 + offset, signals(32, last=T0 + offset)) == 4
    # Demand falls to 8 (1 instance) but has a spike of 20 (3 instances) a minute in.
    series = [(0, 8), (60, 20), (120, 8), (180, 8), (240, 8), (300, 8), (355, 8), (365, 8), (400, 8), (700, 8)]
    seen = []
    for offset, inflight in series:
        now = T0 + offset
        seen.append(run.tick(now, signals(inflight, last=now)))
    # 4 until the window [t - 300, t] holds no tick wanting 4 (the last was at -60 s); the spike at 60 s holds 3
    # until 360 s; then 1.
    assert seen == [4, 4, 4, 4, 4, 3, 3, 1, 1, 1]
    assert run.reasons[0] == "4 → 3: at most 20 requests in flight or waiting for 300 s, target 8 per instance"
    assert run.reasons[1] == "3 → 1: at most 8 requests in flight or waiting for 300 s, target 8 per instance"


def test_no_scale_down_before_the_loop_watched_a_whole_window():
    run = Run(CONCURRENCY, 4, since=T0)
    assert run.tick(T0 + 10, signals(1, last=T0 + 10)) == 4
    assert run.tick(T0 + 299, signals(1, last=T0 + 299)) == 4
    assert run.tick(T0 + 301, signals(1, last=T0 + 301)) == 1


def test_a_burst_panics_up_at_once_and_holds_off_scale_down():
    run = Run(CONCURRENCY, 2)
    assert run.tick(T0, signals(40)) == 5  # 40 ≥ twice what 2 instances carry (16)
    assert run.reasons[-1].startswith("2 → 5: burst of 40 requests in flight or waiting")
    # The burst ends at once; even long past the stabilisation window nothing goes down while panicking ...
    quiet = Run(
        auto(
            min_instances=1,
            max_instances=10,
            target_value=8,
            scale_down_window_s=10,
        ),
        2,
    )
    assert quiet.tick(T0, signals(40)) == 5
    assert quiet.tick(T0 + 30, signals(1, last=T0 + 30)) == 5
    assert quiet.tick(T0 + PANIC_HOLD_S - 1, signals(1, last=T0 + PANIC_HOLD_S - 1)) == 5
    # ... and once the panic is over the stabilised scale-down proceeds.
    assert quiet.tick(T0 + PANIC_HOLD_S + 1, signals(1, last=T0 + PANIC_HOLD_S + 1)) == 1


def test_idle_service_with_min_zero_goes_to_zero_after_the_idle_period():
    policy = auto(
        min_instances=0,
        max_instances=4,
        target_value=8,
        scale_down_window_s=60,
        idle_to_zero_s=600,
    )
    run = Run(policy, 1)
    last = T0
    assert run.tick(T0 + 300, signals(0, last=last)) == 1
    assert run.tick(T0 + 599, signals(0, last=last)) == 1
    assert run.tick(T0 + 600, signals(0, last=last)) == 0
    assert run.reasons == ["1 → 0: idle 10 min"]
    assert run.tick(T0 + 700, signals(0, last=last)) == 0  # stays at zero without requests


def test_a_request_in_flight_keeps_a_min_zero_service_up():
    policy = auto(min_instances=0, max_instances=4, target_value=8, idle_to_zero_s=60)
    run = Run(policy, 1)
    assert run.tick(T0 + 3600, signals(1, last=T0)) == 1  # a very long stream: arrived an hour ago, still running


def test_min_one_never_goes_to_zero():
    run = Run(CONCURRENCY, 1)
    assert run.tick(T0 + 86400, signals(0, last=T0)) == 1


@pytest.mark.parametrize(
    ("sig", "wake"),
    [(signals(0, held=1), False), (signals(0), True), (signals(3), False)],
    ids=["held-request", "wake-request", "in-flight"],
)
def test_a_service_at_zero_wakes_on_demand(sig, wake):
    policy = auto(min_instances=0, max_instances=4, target_value=8)
    run = Run(policy, 0)
    assert run.tick(T0, sig, wake=wake) == 1
    assert run.reasons == ["0 → 1: woken by a request"]


def test_waking_into_a_burst_starts_enough_instances():
    run = Run(auto(min_instances=0, max_instances=4, target_value=8), 0)
    assert run.tick(T0, signals(0, held=30)) == 4


def test_ttft_goal_scales_in_proportion_to_the_p95():
    policy = auto(
        min_instances=1,
        max_instances=8,
        scaling_target=ScalingTarget.TTFT_P95,
        target_value=500,
    )
    run = Run(policy, 2)
    scraped = ServiceMetrics(replicas=2, running=4, waiting=0, kv_cache_usage=None, ttft_p95_ms=900)
    assert run.tick(T0, signals(4), scraped) == 4
    assert run.reasons == ["2 → 4: TTFT p95 900 ms, goal 500 ms"]
    # Without a histogram the gateway's own samples decide.
    gateway_only = Run(policy, 2)
    assert gateway_only.tick(T0, signals(4, ttft=(100,) * 90 + (900,) * 10)) == 4


def test_kv_cache_target_scales_on_the_busiest_replica():
    policy = auto(
        min_instances=1,
        max_instances=8,
        scaling_target=ScalingTarget.KV_CACHE,
        target_value=60,
    )
    run = Run(policy, 2)
    scraped = ServiceMetrics(replicas=2, running=10, waiting=0, kv_cache_usage=0.95, ttft_p95_ms=None)
    assert run.tick(T0, signals(10), scraped) == 4
    assert run.reasons == ["2 → 4: KV cache 95% used, target 60%"]


def test_bounds_moved_by_a_person_are_followed_at_once():
    run = Run(auto(min_instances=3, max_instances=6, target_value=8), 1)
    assert run.tick(T0, signals(0)) == 3
    assert run.reasons == ["1 → 3: the policy's bounds are 3 to 6 instances"]


def test_reasons_read_in_chinese():
    run = Run(
        auto(min_instances=0, max_instances=4, target_value=8, idle_to_zero_s=600),
        1,
    )
    decision = decide(
        policy=run.policy,
        current=1,
        signals=signals(0, last=T0),
        metrics=None,
        wake=False,
        now=T0 + 600,
        history=run.history,
    )
    assert decision.reason is not None
    with translation.override("zh-hans"):
        shown = TIMELINE.render(decision.reason.code, decision.reason.params)
        woken = TIMELINE.render("autoscale_wake", {"n": 1})
    assert shown == "1 → 0：空闲 10 分钟"
    assert woken == "0 → 1：被请求唤醒"
