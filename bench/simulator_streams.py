"""Load test of the engine simulator: N concurrent streaming chat requests against a simulator subprocess.

    python bench/simulator_streams.py --concurrency 500 --requests 2000 --itl-ms 20 --tokens 64

Loopback only. Each of `--concurrency` workers sends streaming chat completions back to back (with
`stream_options.include_usage` and `ignore_eos`, so every answer is exactly `--tokens` tokens) until `--requests`
have been sent or `--max-seconds` have passed. Every response is checked: SSE framing, one JSON object per event,
`[DONE]` last, the usage chunk's completion_tokens equal to the content chunks received. Reports successes, errors,
tokens/s, TTFT percentiles against the configured TTFT, stream durations against the configured ones, and CPU
seconds used by server and client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

try:
    import uvloop
except ImportError:
    uvloop = None

REPO_ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_simulator(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--served-model-name",
        "bench-model",
        "--ttft-ms",
        str(args.ttft_ms),
        "--itl-ms",
        str(args.itl_ms),
        "--prefill-ms-per-1k-tokens",
        "0",
        "--max-num-seqs",
        str(args.max_num_seqs or args.concurrency),
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    prefix = "simulator listening on "
    if not line.startswith(prefix):
        process.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return process, line.removeprefix(prefix)


class Results:
    def __init__(self) -> None:
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.tokens = 0
        self.ttft: list[float] = []
        self.duration: list[float] = []

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def check_stream(raw: bytes, expected_tokens: int) -> int:
    """Validate one SSE body; returns the number of content chunks."""
    events = raw.split(b"\n\n")
    if events[-1] != b"" or events[-2] != b"data: [DONE]":
        raise ValueError("stream does not end with data: [DONE]")
    content = 0
    usage = None
    ids = set()
    for event in events[:-2]:
        if not event.startswith(b"data: "):
            raise ValueError(f"bad SSE event {event[:40]!r}")
        chunk = json.loads(event[6:])
        ids.add(chunk["id"])
        if chunk["choices"]:
            if chunk["choices"][0]["delta"].get("content"):
                content += 1
        else:
            usage = chunk["usage"]
    if len(ids) != 1:
        raise ValueError("chunks carry different ids")
    if usage is None or usage["completion_tokens"] != content or content != expected_tokens:
        raise ValueError(f"usage {usage} does not match {content} content chunks")
    return content


class StreamClient(asyncio.Protocol):
    """A deliberately thin HTTP/1.1 keep-alive client, so the load generator costs less CPU than the server.

    It only timestamps arrivals and collects bytes while a stream runs; decoding and validation happen after the
    stream ends.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future | None = None
        self.buffer = bytearray()
        self.header_end = -1
        self.first_body_at: float | None = None
        self.content_length: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, raw: bytes) -> asyncio.Future:
        self.buffer.clear()
        self.header_end = -1
        self.first_body_at = None
        self.content_length = None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.done

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.header_end < 0:
            self.header_end = buffer.find(b"\r\n\r\n")
            if self.header_end < 0:
                return
            head = bytes(buffer[: self.header_end]).lower()
            marker = head.find(b"content-length:")
            if marker >= 0:
                self.content_length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
        body_bytes = len(buffer) - self.header_end - 4
        if body_bytes > 0 and self.first_body_at is None:
            self.first_body_at = time.monotonic()
        if self.content_length is not None:
            finished = body_bytes >= self.content_length
        else:
            finished = buffer.endswith(b"\r\n0\r\n\r\n") or (body_bytes == 5 and buffer.endswith(b"0\r\n\r\n"))
        if finished and not self.done.done():
            self.done.set_result(bytes(buffer))


def decode_response(raw: bytes) -> tuple[int, bytes]:
    """Status and de-chunked body of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return status, body
    out = []
    position = 0
    while True:
        line_end = body.index(b"\r\n", position)
        size = int(body[position:line_end], 16)
        if size == 0:
            return status, b"".join(out)
        start = line_end + 2
        out.append(body[start : start + size])
        if body[start + size : start + size + 2] != b"\r\n":
            raise ValueError("bad chunk framing")
        position = start + size + 2


async def worker(
    host: str, port: int, args: argparse.Namespace, results: Results, budget: list[int], deadline: float, worker_id: int
) -> None:
    await asyncio.sleep(args.ramp_seconds * worker_id / args.concurrency)
    loop = asyncio.get_running_loop()
    client: StreamClient | None = None
    sequence = 0
    try:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            sequence += 1
            payload = json.dumps(
                {
                    "model": "bench-model",
                    "messages": [{"role": "user", "content": f"Worker {worker_id} request {sequence}: tell a story."}],
                    "max_tokens": args.tokens,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            ).encode()
            raw_request = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode() + payload
            started = time.monotonic()
            try:
                if client is None or client.transport is None or client.transport.is_closing():
                    _, client = await loop.create_connection(StreamClient, host, port)
                raw = await asyncio.wait_for(client.request(raw_request), args.max_seconds + 30)
                status, body = decode_response(raw)
                if status != 200:
                    results.error(f"http {status}")
                    continue
                results.tokens += check_stream(body, args.tokens)
            except (TimeoutError, OSError, ValueError, KeyError) as exc:
                results.error(type(exc).__name__)
                client = None
                continue
            results.ok += 1
            results.ttft.append(client.first_body_at - started)
            results.duration.append(time.monotonic() - started)
    finally:
        if client is not None and client.transport is not None:
            client.transport.close()


async def run(args: argparse.Namespace, base_url: str) -> tuple[Results, float]:
    results = Results()
    budget = [args.requests]
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    started = time.monotonic()
    deadline = started + args.max_seconds
    await asyncio.gather(
        *(worker(host, int(port), args, results, budget, deadline, i) for i in range(args.concurrency))
    )
    return results, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--requests", type=int, default=2000, help="total requests (bounded)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop sending new requests after this")
    parser.add_argument("--ttft-ms", type=float, default=80.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=0, help="default: the concurrency")
    parser.add_argument("--ramp-seconds", type=float, default=1.0, help="spread the workers' first requests")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    process, base_url = start_simulator(args)
    try:
        cpu_before = _cpu_seconds(process.pid)
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        loop_factory = uvloop.new_event_loop if uvloop is not None else None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            results, wall = runner.run(run(args, base_url))
        server_cpu = _cpu_seconds(process.pid) - cpu_before
        client_after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        process.terminate()
        process.wait(timeout=10)
    client_cpu = (client_after.ru_utime - client_before.ru_utime) + (client_after.ru_stime - client_before.ru_stime)

    ttft_ms = [t * 1000 for t in results.ttft]
    print(
        f"concurrency {args.concurrency}, at most {args.requests} requests in {args.max_seconds:g} s, "
        f"{args.tokens} tokens each, configured ttft {args.ttft_ms:g} ms, itl {args.itl_ms:g} ms"
    )
    print(f"succeeded {results.ok}, errors {sum(results.errors.values())} {results.errors or ''}")
    print(f"wall {wall:.2f} s, generated tokens {results.tokens}, {results.tokens / wall:,.0f} tokens/s")
    if ttft_ms:
        print(
            f"ttft ms: p50 {_percentile(ttft_ms, 50):.1f}, p90 {_percentile(ttft_ms, 90):.1f}, "
            f"p99 {_percentile(ttft_ms, 99):.1f}, max {max(ttft_ms):.1f} (configured {args.ttft_ms:g})"
        )
    if results.duration:
        duration_ms = [d * 1000 for d in results.duration]
        expected = args.ttft_ms + (args.tokens - 1) * args.itl_ms
        print(
            f"stream duration ms: p50 {_percentile(duration_ms, 50):.0f}, p99 {_percentile(duration_ms, 99):.0f} "
            f"(configured {expected:g})"
        )
    print(
        f"machine: {os.cpu_count()} cpus, 1-minute load average {load_before:.2f} before the run "
        f"(other work on the machine skews the latency tail)"
    )
    print(
        f"server cpu {server_cpu:.2f} s ({server_cpu / wall:.0%} of one core), "
        f"client cpu {client_cpu:.2f} s ({client_cpu / wall:.0%})"
    )
    if results.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
