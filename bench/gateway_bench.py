"""Gateway benchmarks on loopback: the gateway's added latency and capacity, and prefix-aware vs round-robin routing.

    python bench/gateway_bench.py overhead   # gateway vs the simulator directly, 1/16/64/256 clients, 1000 streams
    python bench/gateway_bench.py routing    # multi-turn chats sharing prefixes: prefix affinity vs round robin

Needs PostgreSQL and Redis (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/maas_bench, created and
migrated on first use; REDIS_URL). Starts engine simulators and uvicorn (``maas.asgi:application``, uvloop +
httptools, one worker) as subprocesses; the load generator is an aiohttp client in this process, so client,
gateway and simulators share the machine's cores, as they would on the 2-core box the figures come from.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/maas_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("SECRET_KEY", "bench-secret-key")
os.environ.setdefault("ENCRYPTION_KEYS", "T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js=")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")
os.environ["GATEWAY_REDIS_PREFIX"] = "bench-gw:"
os.environ["MAAS_BALANCE_LOADER"] = "bench.no_such_loader.balance"  # unlimited: the bench measures the data path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def prepare_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, check=True)


def setup_world(replica_urls: list[str]) -> str:
    """A public model served by ``replica_urls``; returns an API key of a fresh org."""
    import django

    django.setup()
    from datetime import date
    from decimal import Decimal

    from catalog.models import CatalogModel
    from deployments.models import Region, Replica, Service, ServiceStatus
    from maas.models import Organization
    from maas.services import apikey_create

    public, _ = Organization.objects.get_or_create(namespace="public", defaults={"name": "Platform"})
    org, _ = Organization.objects.get_or_create(namespace="bench", defaults={"name": "Bench"})
    model, _ = CatalogModel.objects.get_or_create(slug="bench-chat", defaults=dict(
        name="bench", display_name="bench", publisher="bench", description_zh="-", description_en="-", tasks=["chat"],
        parameters_b=Decimal("1"), context_length=32768, quantization="bf16", license="mit", source_hub="huggingface",
        source_repo="bench/bench", currency="CNY", input_price_per_1k=Decimal("0.001"),
        output_price_per_1k=Decimal("0.002"), spec_updated=date(2026, 11, 21), spec_file="bench.yaml",
        spec_hash="0" * 64))
    Service.objects.filter(org=public, name="bench").delete()
    region, _ = Region.objects.get_or_create(code="bench-1", defaults={"name_zh": "压测", "name_en": "Bench"})
    service = Service.objects.create(
        org=public, name="bench", catalog_model=model, region=region, variant_position=0, runtime="vllm",
        runtime_version="0.10.2", image="-", gpu_count=1, per_gpu_memory_gb=80, cpu=8, memory_gb=64,
        max_model_len=32768, replicas=len(replica_urls), ready_replicas=len(replica_urls), hourly_price=Decimal("1"),
        currency="CNY", status=ServiceStatus.RUNNING)
    for i, url in enumerate(replica_urls):
        Replica.objects.create(service=service, name=f"bench-{i}", base_url=url, ready=True)
    _key, raw = apikey_create(org=org, name=f"bench-{int(time.time())}")
    return raw


def start(cmd: list[str], env: dict | None = None, ready_url: str | None = None) -> subprocess.Popen:
    process = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(ready_url, timeout=1)
            return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:4]} did not start")
            time.sleep(0.1)


def start_simulator(port: int, **flags) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "deployments.simulator", "--port", str(port), "--served-model-name", "public/bench",
           "--replica-id", f"sim-{port}"]
    for name, value in flags.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    return start(cmd, ready_url=f"http://127.0.0.1:{port}/health")


def start_gateway(port: int, routing: str = "prefix") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", "maas.asgi:application", "--port", str(port), "--loop", "uvloop",
           "--http", "httptools", "--no-access-log", "--log-level", "warning", "--backlog", "4096"]
    return start(cmd, env={"GATEWAY_ROUTING": routing}, ready_url=f"http://127.0.0.1:{port}/v1/models")


async def one_request(session, url, headers, body, stream: bool):
    """(ok, ttft seconds, total seconds)."""
    t0 = time.perf_counter()
    ttft = None
    async with session.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            await response.read()
            return False, None, time.perf_counter() - t0
        if not stream:
            await response.read()
            total = time.perf_counter() - t0
            return True, total, total
        done = False
        async for line in response.content:
            if ttft is None and line.startswith(b"data: {"):
                ttft = time.perf_counter() - t0
            if line.startswith(b"data: [DONE]"):
                done = True
        return done, ttft, time.perf_counter() - t0


async def load(base: str, key: str, *, concurrency: int, requests: int, stream: bool, body_for) -> dict:
    url = base + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=0)
    results = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def worker():
            for i in counter:
                body = body_for(i)
                body["stream"] = stream
                try:
                    results.append(await one_request(session, url, headers, body, stream))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    results.append((False, None, 0.0))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r[0]]
    ttfts = [r[1] * 1000 for r in ok]
    totals = [r[2] * 1000 for r in ok]
    return {"ok": len(ok), "errors": len(results) - len(ok), "rps": len(ok) / wall, "wall_s": wall,
            "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99), "total_p50": pct(totals, 50),
            "total_p99": pct(totals, 99)}


def overhead(args) -> None:
    import uvloop

    prepare_database()
    sim_port, gw_port = free_port(), free_port()
    sim = start_simulator(sim_port, ttft_ms=20, itl_ms=5, max_num_seqs=4096)
    key = setup_world([f"http://127.0.0.1:{sim_port}"])
    gw = start_gateway(gw_port)
    direct, gateway = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    rows = []
    try:
        def body_for(i):
            return {"model": "public/bench-chat", "messages": [{"role": "user", "content": f"request {i}"}],
                    "max_tokens": 16, "ignore_eos": True}

        def direct_body(i):
            body = body_for(i)
            body["model"] = "public/bench"
            return body

        async def run_all():
            await load(gateway, key, concurrency=8, requests=200, stream=True, body_for=body_for)  # warm up
            for stream in (False, True):
                for concurrency in (1, 16, 64, 256):
                    n = max(200, concurrency * 6)
                    a = await load(direct, key, concurrency=concurrency, requests=n, stream=stream, body_for=direct_body)
                    b = await load(gateway, key, concurrency=concurrency, requests=n, stream=stream, body_for=body_for)
                    rows.append((stream, concurrency, a, b))
                    print(f"stream={stream} c={concurrency}: direct {a}\n    gateway {b}", flush=True)
            many = await load(gateway, key, concurrency=1000, requests=1000, stream=True,
                              body_for=lambda i: {**body_for(i), "max_tokens": 200})
            print(f"1000 concurrent streams of 200 tokens via gateway: {many}", flush=True)
            rows.append(("open", 1000, None, many))
            peak = await load(gateway, key, concurrency=64, requests=3000, stream=False,
                              body_for=lambda i: {**body_for(i), "max_tokens": 1})
            peak_direct = await load(direct, key, concurrency=64, requests=3000, stream=False,
                                     body_for=lambda i: {**direct_body(i), "max_tokens": 1})
            print(f"max req/s (1-token answers, 64 clients): gateway {peak['rps']:.0f}, direct {peak_direct['rps']:.0f}")
            rows.append(("peak", 64, peak_direct, peak))

        uvloop.run(run_all())
    finally:
        gw.terminate()
        sim.terminate()
    print("\n| mode | clients | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 / p99 (ms) | gateway req/s | errors |")
    print("|---|---|---|---|---|---|---|")
    for stream, concurrency, a, b in rows:
        if stream in ("open", "peak"):
            continue
        label = "stream (TTFT)" if stream else "non-stream (total)"
        key_p50, key_p99 = ("ttft_p50", "ttft_p99")
        print(f"| {label} | {concurrency} | {a[key_p50]:.1f} / {a[key_p99]:.1f} | {b[key_p50]:.1f} / {b[key_p99]:.1f} "
              f"| {b[key_p50] - a[key_p50]:.1f} / {b[key_p99] - a[key_p99]:.1f} | {b['rps']:.0f} "
              f"| {a['errors']}+{b['errors']} |")


def routing(args) -> None:
    import uvloop

    prepare_database()
    ports = [free_port() for _ in range(args.replicas)]
    sims = [start_simulator(p, ttft_ms=15, itl_ms=5, prefill_ms_per_1k_tokens=120, max_num_seqs=256,
                            prefix_cache_blocks=1024) for p in ports]
    key = setup_world([f"http://127.0.0.1:{p}" for p in ports])
    rng = random.Random(7)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
    # Multi-turn chats: every conversation has its own long context (a document) and grows turn by turn.
    conversations = []
    for c in range(args.conversations):
        document = " ".join(rng.choice(words) for _ in range(1500))
        conversations.append([{"role": "system", "content": f"Conversation {c}. Context: {document}"}])
    schedule = [c for _turn in range(args.turns) for c in rng.sample(range(args.conversations), args.conversations)]
    results = {}
    try:
        for mode in ("round_robin", "prefix"):
            for p in ports:
                reset_prefix_cache(p)
            gw_port = free_port()
            gw = start_gateway(gw_port, routing=mode)
            history = [list(conv) for conv in conversations]
            turn_of = [0] * len(history)

            def body_for(i):
                c = schedule[i]
                turn_of[c] += 1
                history[c].append({"role": "user", "content": f"turn {turn_of[c]}: " + " ".join(rng.choice(words)
                                                                                          for _ in range(20))})
                messages = list(history[c])
                history[c].append({"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(30))})
                return {"model": "public/bench-chat", "messages": messages, "max_tokens": 30, "ignore_eos": True}

            try:
                stats = uvloop.run(load(f"http://127.0.0.1:{gw_port}", key, concurrency=args.concurrency,
                                        requests=len(schedule), stream=True, body_for=body_for))
            finally:
                gw.terminate()
                gw.wait()
            hits = queried = 0
            for p in ports:
                cache = json.loads(urlopen(f"http://127.0.0.1:{p}/_sim/stats"))["prefix_cache"]
                hits += cache["hit_tokens"]
                queried += cache["queried_tokens"]
            stats["prefix_hit_rate"] = hits / queried if queried else 0.0
            results[mode] = stats
            print(mode, stats, flush=True)
    finally:
        for s in sims:
            s.terminate()
    print("\n| routing | TTFT p50 (ms) | TTFT p99 (ms) | throughput (req/s) | prefix-cache hit rate | errors |")
    print("|---|---|---|---|---|---|")
    for mode, s in results.items():
        print(f"| {mode} | {s['ttft_p50']:.0f} | {s['ttft_p99']:.0f} | {s['rps']:.1f} | {s['prefix_hit_rate']:.0%} "
              f"| {s['errors']} |")


def urlopen(url, data=None):
    import urllib.request

    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def reset_prefix_cache(port):
    urlopen(f"http://127.0.0.1:{port}/reset_prefix_cache", data=b"{}")


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop the children
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("overhead")
    r = sub.add_parser("routing")
    r.add_argument("--replicas", type=int, default=4)
    r.add_argument("--conversations", type=int, default=32)
    r.add_argument("--turns", type=int, default=6)
    r.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    {"overhead": overhead, "routing": routing}[args.command](args)


if __name__ == "__main__":
    main()
