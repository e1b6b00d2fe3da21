"""The simulated engine's state: admission (max_num_seqs), KV usage, prefix cache, latency model, faults, stats."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

from .config import RuntimeSettings, SimulatorConfig, validate_runtime_patch
from .metrics import EngineMetrics
from .prefix_cache import PrefixCache
from .protocol import GenerationPlan
from .streaming import TokenClock


class Sequence:
    """A running request's hold on the engine; `kv_tokens` feeds vllm:kv_cache_usage_perc."""

    __slots__ = ("kv_tokens",)

    def __init__(self, kv_tokens: int) -> None:
        self.kv_tokens = kv_tokens


class Engine:
    """Shared by all handlers of one simulator; lives on one event loop, so no locks are needed."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.settings = RuntimeSettings.from_config(config)
        self.replica_id = config.replica_id or f"{config.host}:{config.port}"
        self.fingerprint = config.model_version
        self.metrics = EngineMetrics(config.model_name)
        self.prefix_cache = PrefixCache(config.prefix_cache_blocks, config.block_size)
        self.running: set[Sequence] = set()
        self._waiters: deque[tuple[asyncio.Future[None], Sequence]] = deque()
        self._fault_rng = random.Random(config.seed)
        self.created = int(time.time())
        self.ready_at = time.monotonic() + config.load_seconds
        self.requests_total = 0
        self.requests_completed = 0
        self.requests_aborted = 0
        self.status_counts: dict[str, int] = {}
        self.injected_failures = {"error": 0, "hang": 0, "disconnect": 0}
        self.prefix_hit_requests = 0
        self._clock: TokenClock | None = None

    def clock(self) -> TokenClock:
        """The token clock of the loop serving this engine, created on first use."""
        if self._clock is None:
            self._clock = TokenClock(asyncio.get_running_loop())
        return self._clock

    # ------------------------------------------------------------ readiness and faults

    @property
    def loading(self) -> bool:
        return time.monotonic() < self.ready_at

    def draw_failure(self) -> str | None:
        """The fail mode to apply to this request, or None; drawn from a seeded RNG so runs are repeatable."""
        rate = self.settings.failure_rate
        if rate <= 0.0 or self._fault_rng.random() >= rate:
            return None
        mode = self.settings.fail_mode
        self.injected_failures[mode] += 1
        return mode

    # ------------------------------------------------------------ admission

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def admit(self, kv_tokens: int) -> Sequence:
        """Take one of max_num_seqs slots, waiting first come first served when all are busy."""
        sequence = Sequence(kv_tokens)
        if len(self.running) < self.settings.max_num_seqs and not self._waiters:
            self.running.add(sequence)
            return sequence
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (future, sequence)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted in the same loop iteration as the client went away: the slot is ours, hand it on.
                self.release(sequence)
            else:
                self._waiters.remove(entry)
            raise
        return sequence

    def release(self, sequence: Sequence) -> None:
        self.running.discard(sequence)
        self._grant()

    def _grant(self) -> None:
        # The slot is reserved here, not when the woken request resumes, so a burst of releases in one loop
        # iteration never admits more than max_num_seqs.
        limit = self.settings.max_num_seqs
        while self._waiters and len(self.running) < limit:
            future, sequence = self._waiters.popleft()
            if not future.done():
                self.running.add(sequence)
                future.set_result(None)

    def kv_usage(self) -> float:
        used = sum(s.kv_tokens for s in self.running)
        return min(1.0, used / self.config.kv_cache_tokens)

    # ------------------------------------------------------------ prefix cache and latency

    def prefix_lookup(self, plan: GenerationPlan) -> int:
        if not self.settings.prefix_cache:
            return 0
        cached = 0
        for tokens, hashes in zip(plan.sequence_tokens, plan.sequence_blocks, strict=False):
            cached += self.prefix_cache.lookup(hashes, tokens)
        metrics = self.metrics
        metrics.prefix_cache_queries += plan.prompt_tokens
        metrics.prefix_cache_hits += cached
        if cached:
            self.prefix_hit_requests += 1
        return cached

    def prefix_insert(self, plan: GenerationPlan) -> None:
        if self.settings.prefix_cache:
            for hashes in plan.sequence_blocks:
                self.prefix_cache.insert(hashes)

    def ttft_seconds(self, prompt_tokens: int, cached_tokens: int) -> float:
        """Engine time from scheduling to first token: base TTFT plus prefill, shortened by the cached fraction."""
        s = self.settings
        full = (s.ttft_ms + s.prefill_ms_per_1k_tokens * prompt_tokens / 1000.0) / 1000.0
        if cached_tokens and prompt_tokens:
            full *= 1.0 - s.prefix_cache_speedup * (cached_tokens / prompt_tokens)
        return full

    def prefill_seconds(self, prompt_tokens: int) -> float:
        return self.settings.prefill_ms_per_1k_tokens * prompt_tokens / 1_000_000.0

    # ------------------------------------------------------------ control surface

    def patch_settings(self, patch: dict[str, Any]) -> dict[str, Any]:
        clean = validate_runtime_patch(patch)
        for key, value in clean.items():
            setattr(self.settings, key, value)
        if "max_num_seqs" in clean:
            self._grant()
        return self.settings.as_dict()

    def count_status(self, status: int) -> None:
        key = str(status)
        self.status_counts[key] = self.status_counts.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "replica_id": self.replica_id,
            "served_model_names": list(self.config.served_model_names),
            "loading": self.loading,
            "requests_total": self.requests_total,
            "requests_completed": self.requests_completed,
            "requests_aborted": self.requests_aborted,
            "status_counts": dict(self.status_counts),
            "injected_failures": dict(self.injected_failures),
            "running": len(self.running),
            "waiting": self.waiting,
            "kv_cache_usage_perc": self.kv_usage(),
            "prompt_tokens": m.prompt_tokens,
            "generation_tokens": m.generation_tokens,
            "prefix_cache": {
                "enabled": self.settings.prefix_cache,
                "queried_tokens": m.prefix_cache_queries,
                "hit_tokens": m.prefix_cache_hits,
                "hit_requests": self.prefix_hit_requests,
                "blocks": len(self.prefix_cache),
                "capacity_blocks": self.prefix_cache.capacity,
            },
            "settings": self.settings.as_dict(),
        }
