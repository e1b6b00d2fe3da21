"""Replica choice among Ready replicas (per worker): least outstanding requests with bounded prefix affinity.

A prompt's leading part is hashed; rendezvous hashing ranks the replicas for that hash and the request goes to the
highest-ranked replica whose in-flight count stays within ``mean + slack`` (bounded-load affinity), so follow-up
turns of a conversation land where vLLM's prefix cache already holds their prefix, while a hot prefix still
spills over instead of overloading one replica. Prompts longer than ``GATEWAY_LONG_PROMPT_CHARS`` go to the least
loaded replica. A circuit breaker ejects a replica after consecutive failures and lets one probe through after a
cooldown (doubling on every failed probe).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from dataclasses import dataclass

from django.conf import settings


@dataclass
class ReplicaState:
    outstanding: int = 0
    failures: int = 0  # consecutive
    open_until: float = 0.0  # breaker open while now < open_until
    cooldown: float = 0.0
    probing: bool = False  # a half-open probe is in flight
    total: int = 0


class Router:
    def __init__(self):
        self.states: dict[str, ReplicaState] = {}
        self._rr = itertools.count()

    def state(self, endpoint) -> ReplicaState:
        state = self.states.get(endpoint.base_url)
        if state is None:
            state = self.states[endpoint.base_url] = ReplicaState()
        return state

    def _available(self, endpoint, now: float) -> bool:
        state = self.state(endpoint)
        if state.open_until == 0.0:
            return True
        if now < state.open_until or state.probing:
            return False
        return True  # half-open: this request becomes the probe

    def retry_after(self, endpoints) -> int:
        now = time.monotonic()
        waits = [self.state(e).open_until - now for e in endpoints]
        return max(1, int(min(waits, default=1) + 0.999))

    def choose(self, endpoints: list, *, affinity: bytes | None, prompt_chars: int, exclude=()):
        """The endpoint to try next, or None when every replica is excluded or ejected."""
        now = time.monotonic()
        candidates = [e for e in endpoints if e.base_url not in exclude and self._available(e, now)]
        if not candidates:
            return None
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            mode = settings.GATEWAY_ROUTING
            if mode == "round_robin":
                chosen = candidates[next(self._rr) % len(candidates)]
            elif mode == "prefix" and affinity is not None and prompt_chars <= settings.GATEWAY_LONG_PROMPT_CHARS:
                chosen = self._affine(candidates, affinity)
            else:
                chosen = self._least_loaded(candidates)
        state = self.state(chosen)
        if state.open_until:
            state.probing = True
        return chosen

    def _least_loaded(self, candidates):
        low = min(self.state(e).outstanding for e in candidates)
        ties = [e for e in candidates if self.state(e).outstanding == low]
        return ties[0] if len(ties) == 1 else random.choice(ties)

    def _affine(self, candidates, affinity: bytes):
        loads = [self.state(e).outstanding for e in candidates]
        bound = sum(loads) / len(loads) + settings.GATEWAY_AFFINITY_SLACK
        ranked = sorted(
            candidates,
            key=lambda e: hashlib.blake2b(affinity + e.base_url.encode(), digest_size=8).digest(),
            reverse=True,
        )
        for endpoint in ranked:
            if self.state(endpoint).outstanding <= bound:
                return endpoint
        return self._least_loaded(candidates)

    def started(self, endpoint) -> None:
        state = self.state(endpoint)
        state.outstanding += 1
        state.total += 1

    def finished(self, endpoint) -> None:
        state = self.state(endpoint)
        state.outstanding = max(0, state.outstanding - 1)

    def succeeded(self, endpoint) -> None:
        state = self.state(endpoint)
        state.failures = 0
        state.open_until = 0.0
        state.cooldown = 0.0
        state.probing = False

    def failed(self, endpoint) -> None:
        state = self.state(endpoint)
        state.failures += 1
        was_probe = state.probing
        state.probing = False
        if was_probe or state.failures >= settings.GATEWAY_BREAKER_FAILURES:
            base = float(settings.GATEWAY_BREAKER_COOLDOWN)
            state.cooldown = min(max(base, state.cooldown * 2 if was_probe else base), 60.0)
            state.open_until = time.monotonic() + state.cooldown

    def ejected(self, endpoint) -> bool:
        state = self.state(endpoint)
        return bool(state.open_until) and time.monotonic() < state.open_until


router = Router()


def affinity_key(prompt_text: str) -> bytes:
    return prompt_text[: settings.GATEWAY_PREFIX_CHARS].encode("utf-8", "surrogatepass")
