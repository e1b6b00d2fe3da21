"""Gateway benchmarks on loopback: the gateway's added latency and capacity, and prefix-aware vs round-robin routing.

    python bench/gateway_bench.py overhead   # gateway vs the simulator directly, 1/16/64/256 clients, 1000 streams
    python bench/gateway_bench.py routing    # multi-turn chats sharing prefixes: prefix affinity vs round robin

    python bench/gateway_bench.py overhead --workers 2
    python bench/gateway_bench.py cpu        # CPU time per request of simulator, gateway worker, client, Redis
    python bench/gateway_bench.py held       # normal traffic's latency and CPU with 1,000 requests held meanwhile

Needs PostgreSQL and Redis (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/maas_bench, created and
migrated on first use; REDIS_URL). The bench org has a published balance, so requests reserve their worst case and
settle as in production; ``GATEWAY_BALANCE_SLICE_FRACTION=0`` in the environment makes the gateway reserve each
request in Redis instead of from its balance slices (gateway/admission.py). Starts engine simulators and uvicorn
(``maas.asgi:application``, uvloop + httptools, no access log, ``--workers``) as subprocesses. In ``overhead`` the
load generator (an aiohttp client on uvloop that reads streams in whole chunks, or with ``--client lean`` the
gateway's own lean HTTP/1.1 client from gateway/transport/http.py, which costs about a third less CPU per request)
runs as its own process, one per measurement, alternating direct and gateway rounds so both paths see the same
background load; client, gateway and simulator share the machine's cores, as they would on the 2-core box the
figures come from. Each client keeps one keep-alive connection per round (as the ``openai`` SDK's pool does);
latency rows are of requests on open connections, and the first request of every client, which opens its connection
at the same instant as all the others, is reported in its own column.
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
os.environ["MAAS_BALANCE_LOADER"] = "bench.no_such_loader.balance"  # billing's ledger is not involved: the bench
# org's balance is published to the gateway directly (setup_world), so every request reserves and settles against it
BENCH_BALANCE = "1000000"
LOAD_CLIENT = "aiohttp"  # the load generator's HTTP client (--client)


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
    from tenancy.models import Organization
    from tenancy.services import apikey_create

    public, _ = Organization.objects.get_or_create(namespace="public", defaults={"name": "Platform"})
    org, _ = Organization.objects.get_or_create(namespace="bench", defaults={"name": "Bench"})
    model, _ = CatalogModel.objects.get_or_create(
        slug="bench-chat",
        defaults=dict(
            name="bench",
            display_name="bench",
            publisher="bench",
            description_zh="-",
            description_en="-",
            tasks=["chat"],
            parameters_b=Decimal("1"),
            context_length=32768,
            quantization="bf16",
            license="mit",
            source_hub="huggingface",
            source_repo="bench/bench",
            currency="CNY",
            input_price_per_1k=Decimal("0.001"),
            output_price_per_1k=Decimal("0.002"),
            spec_updated=date(2026, 11, 21),
            spec_file="bench.yaml",
            spec_hash="0" * 64,
        ),
    )
    Service.objects.filter(org=public, name="bench").delete()
    region, _ = Region.objects.get_or_create(code="bench-1", defaults={"name_zh": "压测", "name_en": "Bench"})
    service = Service.objects.create(
        org=public,
        name="bench",
        catalog_model=model,
        region=region,
        variant_position=0,
        runtime="vllm",
        runtime_version="0.10.2",
        image="-",
        gpu_count=1,
        per_gpu_memory_gb=80,
        cpu=8,
        memory_gb=64,
        max_model_len=32768,
        instances=len(replica_urls),
        ready_instances=len(replica_urls),
        hourly_price=Decimal("1"),
        currency="CNY",
        status=ServiceStatus.RUNNING,
    )
    for i, url in enumerate(replica_urls):
        Replica.objects.create(service=service, name=f"bench-{i}", base_url=url, ready=True)
    _key, raw = apikey_create(org=org, name=f"bench-{int(time.time())}")
    from gateway import admission
    from gateway.store import k, sredis

    sredis().delete(k("held", org.pk), k("holds", org.pk), k("hold-deadlines", org.pk))  # left by an earlier run
    admission.publish_balance(org.pk, Decimal(BENCH_BALANCE))
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
                raise RuntimeError(f"{cmd[:4]} did not start") from None
            time.sleep(0.1)


def start_simulator(port: int, **flags) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        str(port),
        "--served-model-name",
        "public/bench",
        "--replica-id",
        f"sim-{port}",
    ]
    for name, value in flags.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    return start(cmd, ready_url=f"http://127.0.0.1:{port}/health")


def start_gateway(port: int, routing: str = "prefix", workers: int = 1, **env) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "maas.asgi:application",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--no-proxy-headers",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
        "--workers",
        str(workers),
    ]
    return start(cmd, env={"GATEWAY_ROUTING": routing, **env}, ready_url=f"http://127.0.0.1:{port}/v1/models")


async def _timed(t0: float, status: int, read, pieces, stream: bool):
    """(ok, ttft seconds, total seconds) of one answer: ``read()`` for a whole body, ``pieces`` as a stream arrives."""
    if status != 200:
        await read()
        return False, None, time.perf_counter() - t0
    if not stream:
        await read()
        total = time.perf_counter() - t0
        return True, total, total
    ttft = None
    tail = b""
    async for data in pieces:
        if ttft is None and b"data: {" in tail + data:
            ttft = time.perf_counter() - t0
        tail = (tail + data)[-16:]
    return tail.rstrip().endswith(b"data: [DONE]") and ttft is not None, ttft, time.perf_counter() - t0


async def one_request(session, url, headers, body, stream: bool):
    """(ok, ttft seconds, total seconds)."""
    t0 = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as response:
        return await _timed(t0, response.status, response.read, response.content.iter_any(), stream)


class _Server:
    """What gateway.transport.http's client needs to know of a server: the bench's lean client (``--client lean``)."""

    def __init__(self, base_url: str, key: str):
        self.base_url = base_url
        self.tls_verify = True
        self.client_cert = None
        self.headers = {"Authorization": f"Bearer {key}"}


async def one_lean_request(server: _Server, body: dict, stream: bool):
    """(ok, ttft seconds, total seconds), on gateway.transport.http's pooled keep-alive connections."""
    import orjson

    from gateway.transport import http as upstream

    async def pieces():
        while (data := await response.next_chunk()) is not None:
            yield data

    t0 = time.perf_counter()
    response = await upstream.request(server, "/v1/chat/completions", orjson.dumps(body), "bench")
    try:
        return await _timed(t0, response.status, response.read, pieces(), stream)
    finally:
        response.release()


async def load(
    base: str,
    key: str,
    *,
    concurrency: int,
    requests: int,
    stream: bool,
    body_for,
    samples: bool = False,
    client: str = "aiohttp",
) -> dict:
    url = base + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=0)
    server = _Server(base, key)
    results = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def worker():
            first = True  # this client's first request also opens its connection
            for i in counter:
                body = body_for(i)
                body["stream"] = stream
                try:
                    if client == "lean":
                        results.append((*await one_lean_request(server, body, stream), first))
                    else:
                        results.append((*await one_request(session, url, headers, body, stream), first))
                except (TimeoutError, aiohttp.ClientError, OSError):
                    results.append((False, None, 0.0, first))
                first = False

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r[0]]
    ttfts = [r[1] * 1000 for r in ok]
    totals = [r[2] * 1000 for r in ok]
    if samples:  # requests on open keep-alive connections, and each client's first (connecting) request apart
        return {
            "ok": len(ok),
            "errors": len(results) - len(ok),
            "wall_s": wall,
            "ttfts": [r[1] * 1000 for r in ok if not r[3]],
            "totals": [r[2] * 1000 for r in ok if not r[3]],
            "cold_ttfts": [r[1] * 1000 for r in ok if r[3]],
            "cold_totals": [r[2] * 1000 for r in ok if r[3]],
        }
    return {
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "rps": len(ok) / wall,
        "wall_s": wall,
        "ttft_p50": pct(ttfts, 50),
        "ttft_p99": pct(ttfts, 99),
        "total_p50": pct(totals, 50),
        "total_p99": pct(totals, 99),
    }


def body_for(i: int, model: str, max_tokens: int) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"request {i}"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }


def loadgen(args) -> None:
    """One measurement in its own process (``overhead`` runs it): raw samples as JSON on stdout."""
    import uvloop

    def make(i):
        return body_for(i, args.model, args.max_tokens)

    result = uvloop.run(
        load(
            args.url,
            args.key,
            concurrency=args.concurrency,
            requests=args.requests,
            stream=args.stream,
            body_for=make,
            samples=True,
            client=args.client,
        )
    )
    print(json.dumps(result))


def measure(
    base: str, key: str, model: str, *, concurrency: int, requests: int, stream: bool, max_tokens: int = 16
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "_load",
        "--url",
        base,
        "--key",
        key,
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--max-tokens",
        str(max_tokens),
        "--client",
        LOAD_CLIENT,
    ] + (["--stream"] if stream else [])
    return json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout)


def summarize(parts: list[dict]) -> dict:
    """Percentiles of requests on open connections (``ttft_*``, ``total_*``) and of connecting ones (``cold_*``)."""
    ttfts = [v for p in parts for v in p["ttfts"]]
    totals = [v for p in parts for v in p["totals"]]
    cold = [v for p in parts for v in p["cold_ttfts"]]
    ok, wall = sum(p["ok"] for p in parts), sum(p["wall_s"] for p in parts)
    if not ttfts:  # one request per client: all of them connect
        ttfts, totals = cold, [v for p in parts for v in p["cold_totals"]]
    return {
        "ok": ok,
        "errors": sum(p["errors"] for p in parts),
        "rps": ok / wall if wall else 0.0,
        "ttft_p50": pct(ttfts, 50),
        "ttft_p99": pct(ttfts, 99),
        "total_p50": pct(totals, 50),
        "total_p99": pct(totals, 99),
        "cold_p50": pct(cold, 50),
        "cold_p99": pct(cold, 99),
    }


def interleaved(
    direct: str, gateway: str, key: str, *, rounds: int, exact: str | None = None, **kwargs
) -> tuple[dict, dict, dict | None]:
    """Alternate direct and gateway rounds (the same requests each) so that both see the same background load; with
    ``exact``, also rounds through a second gateway that reserves every request in Redis (no balance slices)."""
    a, b, c = [], [], []
    for _ in range(rounds):
        a.append(measure(direct, key, "public/bench", **kwargs))
        b.append(measure(gateway, key, "public/bench-chat", **kwargs))
        if exact:
            c.append(measure(exact, key, "public/bench-chat", **kwargs))
    return summarize(a), summarize(b), summarize(c) if exact else None


def _cpu_ticks() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq, steal) from /proc/stat."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return []


def _steal_share(before: list[int], after: list[int]) -> str:
    """The share of the machine's CPU time the hypervisor gave to other guests between two readings (noisy
    neighbours: on this kind of VM it varies from run to run and moves every percentile)."""
    if len(before) < 8 or len(after) < 8:
        return "unknown"
    spent = [b - a for a, b in zip(before, after, strict=False)]
    return f"{spent[7] * 100 / max(1, sum(spent)):.1f}%"


def overhead(args) -> None:
    prepare_database()
    ticks = _cpu_ticks()
    sim_port, gw_port = free_port(), free_port()
    sim = start_simulator(sim_port, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, max_num_seqs=4096)
    key = setup_world([f"http://127.0.0.1:{sim_port}"])
    gc_env = {}
    if args.gc_stats:  # bench/gcstats/sitecustomize.py records the gateway processes' cyclic-GC pauses
        gc_prefix = f"/tmp/gateway-bench-gc-{os.getpid()}"
        gc_env = {
            "BENCH_GC_STATS": gc_prefix,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO / "bench" / "gcstats"), os.environ.get("PYTHONPATH")])
            ),
        }
    gw = start_gateway(gw_port, workers=args.workers, **gc_env)
    direct, gateway = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    exact = exact_gw = None
    if args.compare_exact:
        exact_port = free_port()
        exact_gw = start_gateway(exact_port, workers=args.workers, GATEWAY_BALANCE_SLICE_FRACTION="0")
        exact = f"http://127.0.0.1:{exact_port}"
    rows = []
    print(
        f"gateway: {args.workers} uvicorn worker(s); answers of {args.tokens} tokens, simulator TTFT "
        f"{args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms; load average {os.getloadavg()}",
        flush=True,
    )
    try:
        measure(gateway, key, "public/bench-chat", concurrency=8, requests=400, stream=True)  # warm up
        measure(direct, key, "public/bench", concurrency=8, requests=200, stream=True)
        if exact:
            measure(exact, key, "public/bench-chat", concurrency=8, requests=400, stream=True)
        for stream in [m == "stream" for m in args.modes.split(",")]:
            for concurrency in [int(c) for c in args.clients.split(",")]:
                per_round = max(max(args.min_requests, concurrency * 12) // args.rounds, concurrency * 5)
                a, b, c = interleaved(
                    direct,
                    gateway,
                    key,
                    rounds=args.rounds,
                    exact=exact,
                    concurrency=concurrency,
                    requests=per_round,
                    stream=stream,
                    max_tokens=args.tokens,
                )
                rows.append((stream, concurrency, a, b, c))
                print(f"stream={stream} c={concurrency}: direct {a}\n    gateway {b}\n    exact {c}", flush=True)
        if not args.quick:
            capacity(direct, gateway, key, args)
    finally:
        gw.terminate()
        if exact_gw is not None:
            exact_gw.terminate()
        sim.terminate()
    if args.gc_stats:
        gw.wait(30)
        for path in sorted(Path("/tmp").glob(Path(gc_prefix).name + ".*.json")):
            stats = json.loads(path.read_text())
            path.unlink()
            if not any(s["collections"] for s in stats.values()):
                continue  # uvicorn's supervisor with --workers > 1: it serves nothing and never freezes its heap
            print(
                f"cyclic GC of gateway process {path.stem.rsplit('.', 1)[1]}: "
                + "; ".join(
                    f"gen{g} {s['collections']} collections, {s['cpu_ms']} ms CPU (longest {s['max_ms']}), "
                    f"{s['freed']} objects freed"
                    for g, s in stats.items()
                )
            )
    print(f"\nload average after: {os.getloadavg()}; CPU steal during the run: {_steal_share(ticks, _cpu_ticks())}")
    print(
        "\nLatency of requests on open keep-alive connections; the first request of each client (all clients "
        "connect at the same instant, every round) is reported apart."
    )
    print(
        "\n| mode | clients | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 / p99 (ms) "
        "| added to the end of the stream p50 / p99 (ms) | connecting requests: direct / gateway p50 (ms), "
        "added p50 / p99 | gateway req/s | errors |"
        + (" every request reserved in Redis: added p50 / p99 (ms) |" if exact else "")
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if exact else ""))
    for stream, concurrency, a, b, c in rows:
        label = "stream (TTFT)" if stream else "non-stream (total)"
        end = f"{b['total_p50'] - a['total_p50']:.1f} / {b['total_p99'] - a['total_p99']:.1f}" if stream else "–"
        print(
            f"| {label} | {concurrency} | {a['ttft_p50']:.1f} / {a['ttft_p99']:.1f} | {b['ttft_p50']:.1f} / "
            f"{b['ttft_p99']:.1f} | {b['ttft_p50'] - a['ttft_p50']:.1f} / {b['ttft_p99'] - a['ttft_p99']:.1f} "
            f"| {end} | {a['cold_p50']:.1f} / {b['cold_p50']:.1f}, {b['cold_p50'] - a['cold_p50']:.1f} / "
            f"{b['cold_p99'] - a['cold_p99']:.1f} | {b['rps']:.0f} | {a['errors']}+{b['errors']} |"
            + (f" {c['ttft_p50'] - a['ttft_p50']:.1f} / {c['ttft_p99'] - a['ttft_p99']:.1f} |" if c else "")
        )


def capacity(direct: str, gateway: str, key: str, args) -> None:
    """1000 concurrent open streams, and the maximum request rate (1-token answers)."""
    many_direct = summarize(
        [measure(direct, key, "public/bench", concurrency=1000, requests=1000, stream=True, max_tokens=200)]
    )
    many = summarize(
        [measure(gateway, key, "public/bench-chat", concurrency=1000, requests=1000, stream=True, max_tokens=200)]
    )
    print(f"1000 concurrent streams of 200 tokens: direct {many_direct}\n    via gateway: {many}", flush=True)
    peaks = {}
    for concurrency in (64, 256):
        peaks[concurrency] = interleaved(
            direct,
            gateway,
            key,
            rounds=args.rounds,
            concurrency=concurrency,
            requests=6000 // args.rounds,
            stream=False,
            max_tokens=1,
        )[:2]
        print(
            f"max req/s (1-token answers, {concurrency} clients): direct {peaks[concurrency][0]['rps']:.0f}, "
            f"gateway {peaks[concurrency][1]['rps']:.0f}",
            flush=True,
        )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_pid() -> int | None:
    """The local redis-server's pid, when this machine runs one (its CPU is read like the others')."""
    found = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if len(found) == 1 else None


def cpu(args) -> None:
    """CPU time per request of each process (simulator, one gateway worker, client, and redis-server when it runs
    here), direct vs through the gateway."""
    prepare_database()
    redis_pid = _redis_pid()

    def redis_cpu() -> float:
        return _cpu_seconds(redis_pid) if redis_pid else 0.0

    sim_port, gw_port = free_port(), free_port()
    sim = start_simulator(sim_port, ttft_ms=20, itl_ms=5, max_num_seqs=4096)
    key = setup_world([f"http://127.0.0.1:{sim_port}"])
    gw = start_gateway(gw_port)
    paths = (
        ("direct", f"http://127.0.0.1:{sim_port}", "public/bench"),
        ("gateway", f"http://127.0.0.1:{gw_port}", "public/bench-chat"),
    )
    try:
        measure(paths[1][1], key, paths[1][2], concurrency=8, requests=400, stream=True)  # warm up
        for stream in (False, True):
            for name, url, model in paths:
                before = [_cpu_seconds(sim.pid), _cpu_seconds(gw.pid), os.times(), redis_cpu()]
                result = measure(url, key, model, concurrency=args.concurrency, requests=args.requests, stream=stream)
                after = [_cpu_seconds(sim.pid), _cpu_seconds(gw.pid), os.times(), redis_cpu()]
                client = sum(after[2][2:4]) - sum(before[2][2:4])
                per = [
                    (after[0] - before[0]) * 1e6 / result["ok"],
                    (after[1] - before[1]) * 1e6 / result["ok"],
                    client * 1e6 / result["ok"],
                    (after[3] - before[3]) * 1e6 / result["ok"],
                ]
                print(
                    f"| {'stream' if stream else 'non-stream'} | {name} | {result['ok'] / result['wall_s']:.0f} "
                    f"| {per[0]:.0f} | {per[1]:.0f} | {per[2]:.0f} | {f'{per[3]:.0f}' if redis_pid else '–'} |",
                    flush=True,
                )
    finally:
        gw.terminate()
        sim.terminate()


def setup_idle_service() -> str:
    """``public/bench-idle``: a public model scaled to zero (autoscale, minimum 0) that nothing wakes here, so that
    every request for it is held by the gateway until its client leaves; returns the service id."""
    import django

    django.setup()
    from decimal import Decimal

    from catalog.models import CatalogModel
    from deployments.models import Region, ScalingMode, Service, ServiceStatus
    from deployments.serving_signals import signal_key
    from gateway.store import sredis
    from tenancy.models import Organization

    public = Organization.objects.get(namespace="public")
    base = CatalogModel.objects.get(slug="bench-chat")
    model = CatalogModel.objects.filter(slug="bench-idle").first()
    if model is None:
        model = CatalogModel.objects.get(pk=base.pk)
        model.pk, model.slug, model.spec_file = None, "bench-idle", "bench-idle.yaml"
        model.save()
    Service.objects.filter(org=public, name="bench-idle").delete()
    service = Service.objects.create(
        org=public,
        name="bench-idle",
        catalog_model=model,
        region=Region.objects.get(code="bench-1"),
        variant_position=0,
        runtime="vllm",
        runtime_version="0.10.2",
        image="-",
        gpu_count=1,
        per_gpu_memory_gb=80,
        cpu=8,
        memory_gb=64,
        max_model_len=32768,
        instances=0,
        hourly_price=Decimal("1"),
        currency="CNY",
        status=ServiceStatus.IDLE,
        scaling_mode=ScalingMode.AUTOSCALE,
        min_instances=0,
        max_instances=1,
        max_wake_wait_s=3600,
    )
    sredis().delete(signal_key(service.pk))
    return str(service.pk)


def hold_clients(args) -> None:
    """``_hold``: open ``--count`` requests for the idle model and keep them waiting until this process is ended."""
    import uvloop

    async def run():
        connector = aiohttp.TCPConnector(limit=0)
        headers = {"Authorization": f"Bearer {args.key}"}
        body = {"model": "public/bench-idle", "messages": [{"role": "user", "content": "wake up"}], "max_tokens": 4}
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:

            async def one():
                try:
                    async with session.post(args.url + "/v1/chat/completions", json=body, headers=headers) as r:
                        await r.read()
                except (aiohttp.ClientError, OSError):
                    pass

            await asyncio.gather(*(one() for _ in range(args.count)))

    uvloop.run(run())


def held(args) -> None:
    """Normal traffic to a running model, alone and with ``--held`` requests held for a model scaled to zero."""
    prepare_database()
    sim_port, gw_port = free_port(), free_port()
    sim = start_simulator(sim_port, ttft_ms=20, itl_ms=5, max_num_seqs=4096)
    key = setup_world([f"http://127.0.0.1:{sim_port}"])
    idle_id = setup_idle_service()
    gw = start_gateway(gw_port)
    url = f"http://127.0.0.1:{gw_port}"
    from deployments.serving_signals import signals_read

    def held_now() -> int:
        return signals_read([idle_id])[idle_id].held

    def until(predicate, timeout=120.0) -> float:
        t0 = time.monotonic()
        while not predicate():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"held is {held_now()}")
            time.sleep(0.05)
        return time.monotonic() - t0

    print("| round | held meanwhile | mode | ok | errors | req/s | p50 ms | p99 ms | gateway CPU µs/request |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        measure(url, key, "public/bench-chat", concurrency=8, requests=400, stream=True)  # warm up
        for round_ in range(1, args.rounds + 1):
            for holding in (0, args.held):
                holder = None
                if holding:
                    holder = subprocess.Popen(
                        [sys.executable, __file__, "_hold", "--url", url, "--key", key, "--count", str(holding)],
                        cwd=REPO,
                    )
                    took = until(lambda n=holding: held_now() == n)
                    print(f"<!-- {holding} requests held after {took:.1f} s -->", flush=True)
                for stream in (False, True):
                    before = _cpu_seconds(gw.pid)
                    result = summarize(
                        [
                            measure(
                                url,
                                key,
                                "public/bench-chat",
                                concurrency=args.concurrency,
                                requests=args.requests,
                                stream=stream,
                            )
                        ]
                    )
                    cpu_us = (_cpu_seconds(gw.pid) - before) * 1e6 / max(result["ok"], 1)
                    print(
                        f"| {round_} | {holding} | {'stream (TTFT)' if stream else 'non-stream'} | {result['ok']} "
                        f"| {result['errors']} | {result['rps']:.0f} | "
                        f"{result['ttft_p50']:.1f} | {result['ttft_p99']:.1f} | {cpu_us:.0f} |",
                        flush=True,
                    )
                if holder is not None:
                    assert held_now() == holding, held_now()
                    holder.terminate()
                    holder.wait()
                    took = until(lambda: held_now() == 0)
                    print(f"<!-- their clients gone: held back to 0 after {took:.1f} s -->", flush=True)
    finally:
        gw.terminate()
        sim.terminate()


def routing(args) -> None:
    import uvloop

    prepare_database()
    ports = [free_port() for _ in range(args.replicas)]
    sims = [
        start_simulator(
            p, ttft_ms=15, itl_ms=5, prefill_ms_per_1k_tokens=120, max_num_seqs=256, prefix_cache_blocks=1024
        )
        for p in ports
    ]
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
                turn_of[c] += 1  # noqa: B023
                history[c].append(  # noqa: B023
                    {"role": "user", "content": f"turn {turn_of[c]}: " + " ".join(rng.choice(words) for _ in range(20))}  # noqa: B023
                )
                messages = list(history[c])  # noqa: B023
                history[c].append({"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(30))})  # noqa: B023
                return {"model": "public/bench-chat", "messages": messages, "max_tokens": 30, "ignore_eos": True}

            try:
                stats = uvloop.run(
                    load(
                        f"http://127.0.0.1:{gw_port}",
                        key,
                        concurrency=args.concurrency,
                        requests=len(schedule),
                        stream=True,
                        body_for=body_for,
                    )
                )
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
        print(
            f"| {mode} | {s['ttft_p50']:.0f} | {s['ttft_p99']:.0f} | {s['rps']:.1f} | {s['prefix_hit_rate']:.0%} "
            f"| {s['errors']} |"
        )


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
    o = sub.add_parser("overhead")
    o.add_argument("--workers", type=int, default=1)
    o.add_argument("--rounds", type=int, default=3)
    o.add_argument("--clients", default="1,16,64,256", help="comma-separated client counts")
    o.add_argument("--modes", default="non-stream,stream", help="non-stream, stream or both")
    o.add_argument("--quick", action="store_true", help="only the latency rows (no 1000 streams, no max req/s)")
    o.add_argument(
        "--compare-exact",
        action="store_true",
        help="also rounds through a second gateway with "
        "GATEWAY_BALANCE_SLICE_FRACTION=0 (every request reserved in Redis), in the same run",
    )
    o.add_argument("--tokens", type=int, default=16, help="tokens per answer (ignore_eos)")
    o.add_argument(
        "--min-requests", type=int, default=200, help="requests per row and path, at least (else 12 per client)"
    )
    o.add_argument("--ttft-ms", type=float, default=20.0, help="the simulator's base time to first token")
    o.add_argument(
        "--client",
        choices=("aiohttp", "lean"),
        default="aiohttp",
        help="the load generator's client: "
        "aiohttp, or gateway.transport.http's lean client (about a third less CPU per request)",
    )
    o.add_argument("--itl-ms", type=float, default=5.0, help="the simulator's inter-token latency")
    o.add_argument(
        "--gc-stats", action="store_true", help="report the gateway processes' cyclic-GC pauses (bench/gcstats)"
    )
    c = sub.add_parser("cpu")
    c.add_argument("--concurrency", type=int, default=64)
    c.add_argument("--requests", type=int, default=3000)
    c.add_argument("--client", choices=("aiohttp", "lean"), default="aiohttp")
    g = sub.add_parser("_load")
    for name in ("--url", "--key", "--model"):
        g.add_argument(name, required=True)
    for name in ("--concurrency", "--requests", "--max-tokens"):
        g.add_argument(name, type=int, required=True)
    g.add_argument("--stream", action="store_true")
    g.add_argument("--client", choices=("aiohttp", "lean"), default="aiohttp")
    h = sub.add_parser("held")
    h.add_argument("--held", type=int, default=1000, help="requests held for a model scaled to zero")
    h.add_argument("--rounds", type=int, default=2)
    h.add_argument("--concurrency", type=int, default=16)
    h.add_argument("--requests", type=int, default=2000)
    w = sub.add_parser("_hold")
    w.add_argument("--url", required=True)
    w.add_argument("--key", required=True)
    w.add_argument("--count", type=int, required=True)
    r = sub.add_parser("routing")
    r.add_argument("--replicas", type=int, default=4)
    r.add_argument("--conversations", type=int, default=32)
    r.add_argument("--turns", type=int, default=6)
    r.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    global LOAD_CLIENT
    if args.command in ("overhead", "cpu"):
        LOAD_CLIENT = args.client
    commands = {"overhead": overhead, "routing": routing, "cpu": cpu, "held": held, "_load": loadgen}
    commands["_hold"] = hold_clients
    commands[args.command](args)


if __name__ == "__main__":
    main()
