"""The streaming hot path: pre-encoded SSE templates and one shared clock that writes every stream's tokens.

A coroutine per stream sleeping between tokens costs a timer, a future and a task step per token; with hundreds of
streams on two cores that overhead, not the socket writes, is what delays first tokens. Instead the handler writes
the first token itself (so aiohttp sends the headers) and then hands the stream to `TokenClock`, one timer callback
that pops due streams off a heap and writes their next chunk straight to the transport, framed for chunked
transfer-encoding the way aiohttp's writer would. The handler resumes once, to write the tail and finish the
response through aiohttp.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from heapq import heappop, heappush
from typing import Any

from .metrics import Histogram
from .protocol import GenerationPlan
from .text import VOCABULARY

# Token chunks are held back while this much is queued in a slow client's socket buffer.
BACKPRESSURE_BYTES = 1 << 20
# uvloop's clock ticks in milliseconds: serve everything due within one tick so the timer never spins.
_TICK_SLACK = 0.001


def json_str(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


# Every piece the generator can emit, already JSON-encoded: the streaming loop never calls a JSON encoder.
_PIECE_JSON: dict[str, bytes] = {}
for _word in VOCABULARY:
    for _piece in (_word, " " + _word, _word.capitalize(), " " + _word.capitalize()):
        _PIECE_JSON[_piece] = json_str(_piece)
for _piece in (".", ","):
    _PIECE_JSON[_piece] = json_str(_piece)


def _encode_piece(piece: str) -> bytes:
    encoded = _PIECE_JSON.get(piece)
    return encoded if encoded is not None else json_str(piece)


class StreamEncoder:
    """Byte templates for one streamed request's SSE events; `chunk(step)` is everything sent at that step."""

    def __init__(self, plan: GenerationPlan, request_id: str, created: int, fingerprint: str, dumps: Any) -> None:
        self.plan = plan
        self.dumps = dumps
        self.is_chat = plan.kind == "chat"
        obj = b"chat.completion.chunk" if self.is_chat else b"text_completion"
        self.head = (
            b'data: {"id":'
            + json_str(request_id)
            + b',"object":"'
            + obj
            + b'","created":'
            + str(created).encode()
            + b',"model":'
            + json_str(plan.model)
            + b',"system_fingerprint":'
            + json_str(fingerprint)
            + b',"choices":['
        )
        if self.is_chat:
            self.token_prefix = [b'{"index":%d,"delta":{"content":' % c.index for c in plan.choices]
            self.token_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            self.token_prefix = [b'{"index":%d,"text":' % c.index for c in plan.choices]
            self.token_suffix = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
        self.single = len(plan.choices) == 1
        self.pieces0 = plan.choices[0].pieces
        self.last0 = len(self.pieces0) - 1

    def role_chunk(self) -> bytes:
        parts = [
            b'{"index":%d,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}' % c.index
            for c in self.plan.choices
        ]
        return self.head + b",".join(parts) + b"]}\n\n"

    def token_chunk(self, position: int, piece: str) -> bytes:
        return self.head + self.token_prefix[position] + _encode_piece(piece) + self.token_suffix

    def finish_chunk(self, position: int) -> bytes:
        choice = self.plan.choices[position]
        stop_reason = b"null" if choice.stop_reason is None else json_str(choice.stop_reason)
        tail = (
            b',"logprobs":null,"finish_reason":"'
            + choice.finish_reason.encode()
            + b'","stop_reason":'
            + stop_reason
            + b"}]}\n\n"
        )
        if self.is_chat:
            return self.head + b'{"index":%d,"delta":{}' % choice.index + tail
        return self.head + b'{"index":%d,"text":""' % choice.index + tail

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        return self.head + b'],"usage":' + self.dumps(usage) + b"}\n\n"

    def chunk(self, step: int) -> bytes:
        if self.single:
            piece = self.pieces0[step]
            out = self.token_chunk(0, piece) if piece else b""
            if step == self.last0:
                out += self.finish_chunk(0)
        else:
            parts = []
            for position, choice in enumerate(self.plan.choices):
                pieces = choice.pieces
                if step < len(pieces):
                    if pieces[step]:
                        parts.append(self.token_chunk(position, pieces[step]))
                    if step == len(pieces) - 1:
                        parts.append(self.finish_chunk(position))
            out = b"".join(parts)
        if step == 0 and self.is_chat:
            out = self.role_chunk() + out
        return out


class StreamJob:
    """One stream's remaining tokens, written by the clock; `future` resolves when they are all out (or cut)."""

    __slots__ = (
        "encoder",
        "transport",
        "chunked",
        "steps",
        "step",
        "first_at",
        "itl",
        "previous",
        "observe_itl",
        "sequence",
        "cut_after",
        "cut",
        "future",
    )

    def __init__(
        self,
        *,
        encoder: StreamEncoder,
        transport: asyncio.Transport,
        chunked: bool,
        steps: int,
        first_at: float,
        itl: float,
        itl_histogram: Histogram,
        sequence: Any,
        cut_after: int | None,
        future: asyncio.Future[None],
    ) -> None:
        self.encoder = encoder
        self.transport = transport
        self.chunked = chunked
        self.steps = steps
        self.step = 1  # the handler wrote step 0 itself
        self.first_at = first_at
        self.itl = itl
        self.previous = time.monotonic()
        self.observe_itl = itl_histogram.observe
        self.sequence = sequence
        self.cut_after = cut_after
        self.cut = False
        self.future = future

    def emit(self, now: float) -> float | None:
        """Write the next step; return when the one after is due, or None when this job is over."""
        future = self.future
        if future.done():  # the handler was cancelled: the client went away
            return None
        transport = self.transport
        if transport.is_closing():
            future.set_exception(ConnectionResetError("client disconnected"))
            return None
        if transport.get_write_buffer_size() > BACKPRESSURE_BYTES:
            return now + self.itl
        chunk = self.encoder.chunk(self.step)
        if chunk:
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk)
        clock = time.monotonic()
        self.observe_itl(clock - self.previous)
        self.previous = clock
        self.step += 1
        self.sequence.kv_tokens += 1
        if self.cut_after is not None and self.step >= self.cut_after:
            self.cut = True
            future.set_result(None)
            return None
        if self.step >= self.steps:
            future.set_result(None)
            return None
        return self.first_at + self.step * self.itl


class TokenClock:
    """A heap of streams keyed by when their next token is due, served by a single re-armed timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, StreamJob]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, job: StreamJob, when: float) -> None:
        heappush(self._heap, (when, next(self._order), job))
        if when < self._armed_for:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = when
        self._handle = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._handle = None
        self._armed_for = float("inf")
        heap = self._heap
        order = self._order
        now = self.loop.time()
        horizon = now + _TICK_SLACK
        while heap and heap[0][0] <= horizon:
            job = heappop(heap)[2]
            try:
                due = job.emit(now)
            except Exception as exc:  # a broken transport must not stop every other stream
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            if due is not None:
                heappush(heap, (due, next(order), job))
        if heap:
            self._arm(heap[0][0])
