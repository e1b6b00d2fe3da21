"""A compressed day of traffic against one service on the local driver: fixed at the peak, autoscale, scale-to-zero.

    python bench/autoscale_trace.py run                    # three scenarios of --day-s seconds each (default 540)
    python bench/autoscale_trace.py trace                  # the day only: its requests, peak and instance counts
    python bench/autoscale_trace.py run --day-s 180 --scenarios zero   # a short try of one scenario

The platform runs as it would in production, as processes on this machine: the gateway (uvicorn serving
``maas.asgi:application``), the autoscaler (``manage.py autoscale``), a Celery worker (the reconcile tasks that
``service_autoscale`` and ``service_wake`` enqueue) and Celery beat (what it normally runs: the 30 s reconcile safety
net, usage ingestion and billing). Instances are engine simulator processes started by the local driver, loading for
``--startup-s`` seconds (``LOCAL_ENGINE_STARTUP_S``, ``/health`` 503 meanwhile), with the simulator's default latency
(TTFT 80 ms plus 20 ms per 1k prompt tokens, 15 ms between tokens) and at most ``--max-num-seqs`` requests running
per instance (the bench's catalog model carries ``--max-num-seqs`` in its runtime args, as a vLLM deployment would;
the rest wait in the engine's queue).

The day (seeded, ``--seed``): an office-hours curve (quiet night with a few stray requests, a morning ramp, a
lunch dip, an afternoon peak, an evening tail, an idle late evening) with three bursts (the rate doubles for about a
quarter of an hour of the day), compressed into ``--day-s`` seconds; arrivals are a Poisson process following the
curve, each a streamed chat completion of 32–160 tokens (``ignore_eos``) with a prompt of its own. An async aiohttp
client (its own process) sends them on schedule with an ``sk-`` key of the bench org, whatever the answers.

Scenarios, each on a fresh service of the same model (``trace/<scenario>-<stamp>``, pay-as-you-go):

- ``fixed``: fixed at the peak's instance count, the expected concurrency's highest second over ``--target``;
- ``autoscale``: concurrency target ``--target`` per instance, 1 … the peak's count, scale-down window ``--window-s``;
- ``zero``: the same with minimum 0 and ``--idle-s`` idle before scale-to-zero (the policy's shortest, 60 s).

Each scenario starts once its service runs its first instances (all of them for ``fixed``) and its measured window is
the day. Reported: billed instance-seconds (integrated from the service's meter timeline, the ``METER`` events that
billing reads: instances Ready), also the instance-seconds of engine processes alive (sampled every second:
starting and draining ones included, what a GPU is held for); TTFT p50/p95/p99 of the answered requests (send to the
first SSE event with data), failed requests (any status but 200, an error event, no ``[DONE]``, a broken
connection), the share of all requests answered within ``--ttft-goal-ms``, and for the requests that arrived while
the service had no billable instance (Idle or waking, from the same meter timeline) their wait to the first token.

Needs PostgreSQL and Redis: ``DATABASE_URL`` (created and migrated on first use) and ``REDIS_URL``; keys under the
``trace:`` prefix. Every process the bench starts (and every engine process its services started) is stopped on the
way out, also on failure or Ctrl-C. Logs of the platform's processes stay in the printed folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/maas_trace")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("SECRET_KEY", "bench-secret-key")
os.environ.setdefault("ENCRYPTION_KEYS", "T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js=")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")
os.environ["GATEWAY_REDIS_PREFIX"] = "trace:"

SCENARIOS = ("fixed", "autoscale", "zero")
ORG_NAMESPACE = "trace"
MODEL_SLUG = "trace-chat"
ITL_S = 0.015  # the simulator's defaults (simulator/config.py), used for the expected concurrency
TTFT_S = 0.08
TOKENS = (32, 160)
# The day's shape: (hour, share of the peak rate), linear in between; bursts double it.
CURVE = [
    (0.0, 0.0),
    (6.8, 0.0),
    (7.0, 0.03),
    (9.0, 0.55),
    (11.5, 0.75),
    (12.0, 0.4),
    (13.0, 0.4),
    (13.5, 0.8),
    (15.0, 1.0),
    (17.0, 0.85),
    (19.0, 0.3),
    (21.0, 0.08),
    (21.5, 0.0),
    (24.0, 0.0),
]
BURSTS = [(10.5, 0.3), (15.5, 0.25), (18.5, 0.3)]  # (start hour, hours): the rate doubles
STRAYS = [3.5, 3.52]  # hours of single requests in the night (a batch job, someone on call)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --- the day ----------------------------------------------------------------------------------------------------


def share_at(hour: float) -> float:
    for (h0, s0), (h1, s1) in zip(CURVE, CURVE[1:], strict=False):
        if h0 <= hour <= h1:
            base = s0 + (s1 - s0) * (hour - h0) / (h1 - h0) if h1 > h0 else s1
            break
    else:
        base = 0.0
    if any(start <= hour < start + length for start, length in BURSTS):
        base *= 2
    return base


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds from the day's start
    tokens: int


def make_day(*, day_s: float, peak_rps: float, seed: int) -> list[Arrival]:
    """Poisson arrivals following the curve (thinning), plus the night's stray requests."""
    rng = random.Random(seed)
    top = 2 * peak_rps
    arrivals = [Arrival(h / 24 * day_s, rng.randint(*TOKENS)) for h in STRAYS]
    t = 0.0
    while True:
        t += rng.expovariate(top)
        if t >= day_s:
            break
        if rng.random() < share_at(24 * t / day_s) * peak_rps / top:
            arrivals.append(Arrival(t, rng.randint(*TOKENS)))
    return sorted(arrivals, key=lambda a: a.at)


def expected_concurrency(arrivals: list[Arrival], day_s: float) -> list[float]:
    """Requests in flight in each second of the day, at the simulator's latency without any queueing."""
    per_second = [0.0] * (int(day_s) + 1)
    for a in arrivals:
        start, end = a.at, a.at + TTFT_S + a.tokens * ITL_S
        s = int(start)
        while s < end and s < len(per_second):
            per_second[s] += min(end, s + 1) - max(start, s)
            s += 1
    return per_second


def peak_instances(arrivals: list[Arrival], day_s: float, target: int) -> tuple[int, float]:
    peak = max(expected_concurrency(arrivals, day_s))
    return max(1, math.ceil(peak / target)), peak


# --- the load client (its own process) --------------------------------------------------------------------------


async def _one(session, url: str, key: str, model: str, i: int, arrival: dict, start: float) -> dict:
    import aiohttp

    words = " ".join(f"w{(i * 7919 + j) % 9973}" for j in range(40))
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {i}: {words}"}],
        "max_tokens": arrival["tokens"],
        "ignore_eos": True,
        "stream": True,
    }
    delay = start + arrival["at"] - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    sent_wall, sent = time.time(), time.monotonic()
    row = {"i": i, "at": arrival["at"], "sent_wall": sent_wall, "late_s": sent - start - arrival["at"]}
    first = None
    try:
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as answer:
            row["status"] = answer.status
            if answer.status != 200:
                row["error"] = (await answer.text())[:300]
                return row
            done = False
            async for line in answer.content:
                if line.startswith(b"data: "):
                    if first is None:
                        first = time.monotonic()
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    elif b'"error"' in line[:20]:
                        row["error"] = line.decode("utf-8", "replace")[:300]
            if not done and "error" not in row:
                row["error"] = "no [DONE]"
    except (TimeoutError, aiohttp.ClientError) as exc:
        row["error"] = repr(exc)[:300]
    finally:
        row["ended"] = time.monotonic() - sent
        if first is not None:
            row["ttft"] = first - sent
    return row


async def _client(args) -> None:
    import aiohttp

    arrivals = json.loads(Path(args.trace).read_text())
    timeout = aiohttp.ClientTimeout(total=args.timeout_s, sock_connect=10)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.monotonic() + 0.5
        print(json.dumps({"start_wall": time.time() + 0.5}), flush=True)
        rows = await asyncio.gather(
            *(_one(session, args.url, args.key, args.model, i, a, start) for i, a in enumerate(arrivals))
        )
    Path(args.out).write_text(json.dumps(rows))


def client_main(args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_client(args))


# --- the platform's processes -----------------------------------------------------------------------------------


class Processes:
    """The processes this bench started; ``stop_all`` ends each by its own pid (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process is stopped
        process = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.running.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} (see {self.logs / (name + '.log')})")

    def stop_all(self) -> None:
        for _name, process in reversed(self.running):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)  # its own session: the process and its children
                except ProcessLookupError:
                    pass
        for _name, process in reversed(self.running):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        self.running.clear()


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.2)


def prepare_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, check=True)


# --- the world in the database ----------------------------------------------------------------------------------


def setup_world(max_num_seqs: int):
    """The bench org (with credit), its API key, the bench model (``--max-num-seqs`` in its runtime args) and a local
    cluster; returns (org, region, model, raw key). Services of earlier runs are deleted."""
    from datetime import date
    from decimal import Decimal

    from billing.services.ledger import account_credit
    from catalog.models import CatalogModel, DeploymentVariant
    from core import redis as platform_redis
    from deployments.drivers import local
    from deployments.models import Region, Service, ServiceStatus
    from deployments.services import local_cluster_create
    from tenancy.models import Organization
    from tenancy.services import apikey_create

    client = platform_redis.client()
    for key in client.scan_iter(match="trace:*", count=1000):
        client.delete(key)
    org, _ = Organization.objects.get_or_create(namespace=ORG_NAMESPACE, defaults={"name": "Trace bench"})
    for service in Service.objects.filter(org=org).exclude(status=ServiceStatus.DELETED):
        local.stop_all(service)
        Service.objects.filter(pk=service.pk).update(status=ServiceStatus.DELETED, desired_running=False)
    account_credit(org=org, amount=Decimal("100000"), reason="trace bench", actor=None)
    model, _ = CatalogModel.objects.update_or_create(
        slug=MODEL_SLUG,
        defaults=dict(
            name="Trace-Chat",
            display_name="Trace chat",
            publisher="bench",
            description_zh="-",
            description_en="-",
            tasks=["chat"],
            parameters_b=Decimal("1"),
            context_length=32768,
            quantization="bf16",
            license="mit",
            source_hub="huggingface",
            source_repo="bench/trace-chat",
            currency="CNY",
            input_price_per_1k=Decimal("0.001"),
            output_price_per_1k=Decimal("0.002"),
            spec_updated=date(2026, 12, 1),
            spec_file="trace-chat.yaml",
            spec_hash="0" * 64,
        ),
    )
    DeploymentVariant.objects.update_or_create(
        model=model,
        position=0,
        defaults=dict(
            runtime="vllm",
            version_required=">=0.5.0",
            gpu_type="nvidia-gpu",
            gpu_count=1,
            per_gpu_memory_gb=8,
            cpu=4,
            memory_gb=16,
            custom_runtime_args=["--max-num-seqs", str(max_num_seqs)],
        ),
    )
    region, _ = Region.objects.get_or_create(code="trace-1", defaults={"name_zh": "压测", "name_en": "Trace"})
    local_cluster_create(name="trace-local", region=region, gpus=16)
    _key, raw = apikey_create(org=org, name=f"trace-{int(time.time())}")
    return org, region, model, raw


def create_service(*, scenario: str, org, region, model, peak: int, args):
    from deployments.models import ScalingMode
    from deployments.policy import ScalingPolicy
    from deployments.services import service_create

    name = f"{scenario}-{datetime.now(UTC):%H%M%S}"
    if scenario == "fixed":
        policy = ScalingPolicy(min_instances=peak, max_instances=peak, target_value=args.target)
        instances = peak
    else:
        policy = ScalingPolicy(
            scaling_mode=ScalingMode.AUTOSCALE,
            min_instances=0 if scenario == "zero" else 1,
            max_instances=peak,
            target_value=args.target,
            scale_down_window_s=args.window_s,
            idle_to_zero_s=args.idle_s,
            max_wake_wait_s=args.max_wake_wait_s,
        )
        instances = 1
    return service_create(
        org=org, actor=None, catalog_model=model, region=region, name=name, instances=instances, policy=policy
    )


def wait_running(service, want: int, timeout: float):
    from deployments.models import Service, ServiceStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = Service.objects.get(pk=service.pk)
        if row.status == ServiceStatus.RUNNING and row.ready_instances >= want:
            return row
        time.sleep(0.5)
    raise RuntimeError(f"{service.name} not running {want} instances after {timeout:.0f} s: {row.status_message}")


class Sampler(threading.Thread):
    """Every second: the service's desired instances, engine processes alive (rows with a pid) and ready ones."""

    def __init__(self, service_id):
        super().__init__(daemon=True)
        self.service_id = service_id
        self.samples: list[tuple[float, int, int, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from deployments.models import Replica, Service

        try:
            while not self.stopping.wait(1.0):
                desired = Service.objects.filter(pk=self.service_id).values_list("instances", flat=True).first()
                rows = list(Replica.objects.filter(service_id=self.service_id).values_list("pid", "ready"))
                self.samples.append(
                    (time.time(), desired or 0, sum(1 for p, _r in rows if p), sum(r for _p, r in rows))
                )
        finally:
            connection.close()


# --- one scenario -----------------------------------------------------------------------------------------------


def meter_intervals(service, start: float, end: float) -> list[tuple[float, float, int]]:
    """(from, to, billable instances) covering [start, end], from the service's meter timeline."""
    from deployments.models import EventKind

    events = list(
        service.events.filter(kind=EventKind.METER, billable_instances__isnull=False)
        .order_by("created_at", "id")
        .values_list("created_at", "billable_instances")
    )
    current, out, at = 0, [], start
    for moment, instances in events:
        t = moment.timestamp()
        if t <= start:
            current = instances or 0
            continue
        if t >= end:
            break
        out.append((at, t, current))
        at, current = t, instances or 0
    out.append((at, end, current))
    return out


def sampled_instance_s(samples: list[tuple[float, int, int, int]], start: float, end: float) -> float:
    """Engine processes alive × seconds over [start, end], each sample holding until the next."""
    total = 0.0
    for (t, _d, n, _r), (t_next, *_rest) in zip(samples, samples[1:], strict=False):
        total += n * max(0.0, min(t_next, end) - max(t, start))
    return round(total, 1)


def run_scenario(scenario: str, *, world, arrivals, peak: int, gateway: str, procs: Processes, args) -> dict:
    from deployments.models import EventKind, Service, ServiceStatus
    from deployments.services import service_delete

    org, region, model, key = world
    service = create_service(scenario=scenario, org=org, region=region, model=model, peak=peak, args=args)
    want = peak if scenario == "fixed" else 1
    print(f"[{scenario}] {service.model_id}: waiting for {want} instance(s)", flush=True)
    wait_running(service, want, timeout=args.startup_s * 3 + 60)
    trace_file = procs.logs / f"{scenario}-trace.json"
    trace_file.write_text(json.dumps([{"at": a.at, "tokens": a.tokens} for a in arrivals]))
    out_file = procs.logs / f"{scenario}-requests.json"
    sampler = Sampler(service.pk)
    sampler.start()
    client = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "client",
            "--trace",
            str(trace_file),
            "--url",
            gateway + "/v1/chat/completions",
            "--key",
            key,
            "--model",
            service.model_id,
            "--out",
            str(out_file),
            "--timeout-s",
            str(args.max_wake_wait_s + 60),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    procs.running.append((f"{scenario}-client", client))
    assert client.stdout is not None
    start = json.loads(client.stdout.readline())["start_wall"]
    end = start + args.day_s
    print(f"[{scenario}] day started {datetime.fromtimestamp(start, UTC):%H:%M:%S} UTC, {len(arrivals)} requests")
    while client.poll() is None:
        procs.check()
        time.sleep(2)
        done = time.time() - start
        if int(done) % 60 < 2:
            row = Service.objects.get(pk=service.pk)
            print(f"[{scenario}] {done:5.0f} s: {row.instances} desired, {row.ready_instances} ready", flush=True)
    while time.time() < end + 1.5:  # the day's quiet end is measured too
        time.sleep(0.5)
    sampler.stopping.set()
    sampler.join(5)
    procs.running.remove((f"{scenario}-client", client))
    rows = json.loads(out_file.read_text())

    service = Service.objects.get(pk=service.pk)
    meter = meter_intervals(service, start, end)
    billed = sum((b - a) * n for a, b, n in meter)
    zero = [(a, b) for a, b, n in meter if n == 0]
    held = sampled_instance_s(sampler.samples, start, end)
    ok = [r for r in rows if r.get("status") == 200 and "error" not in r]
    failed = [r for r in rows if r not in ok]
    ttfts = [r["ttft"] for r in ok if "ttft" in r]
    goal = args.ttft_goal_ms / 1000
    within = sum(1 for r in ok if r.get("ttft", 1e9) <= goal)
    woken = [r for r in rows if any(a <= r["sent_wall"] < b for a, b in zero)]
    waits = [r["ttft"] for r in woken if r in ok and "ttft" in r]
    awake_rows = [r for r in rows if r not in woken]
    awake_within = sum(1 for r in awake_rows if r in ok and r.get("ttft", 1e9) <= goal)
    scale_events = list(
        service.events.filter(kind=EventKind.SCALE, created_at__gte=datetime.fromtimestamp(start, UTC))
        .order_by("created_at")
        .values_list("created_at", "message")
    )
    result = {
        "scenario": scenario,
        "service": service.model_id,
        "requests": len(rows),
        "failed": len(failed),
        "failures": sorted({(r.get("status"), r.get("error", "")[:120]) for r in failed})[:10],
        "billed_instance_s": round(billed, 1),
        "process_instance_s": held,
        "ttft_ms": {q: round(pct(ttfts, q) * 1000, 1) for q in (50, 95, 99)},
        "ttft_max_ms": round(max(ttfts) * 1000, 1) if ttfts else None,
        "within_goal": within / len(rows) if rows else 0.0,
        "within_goal_awake": awake_within / len(awake_rows) if awake_rows else 0.0,
        "woken": len(woken),
        "wake_wait_s": {q: round(pct(waits, q), 2) for q in (50, 99)} if waits else None,
        "wake_wait_max_s": round(max(waits), 2) if waits else None,
        "client_late_p99_s": round(pct([r["late_s"] for r in rows], 99), 3),
        "scale_events": [(round(t.timestamp() - start, 1), m) for t, m in scale_events],
        "max_desired": max((d for _t, d, _n, _r in sampler.samples), default=0),
    }
    print(json.dumps(result, indent=1, ensure_ascii=False), flush=True)
    service_delete(service=service, actor=None)
    from deployments.drivers import local

    deadline = time.monotonic() + 30
    while Service.objects.get(pk=service.pk).status != ServiceStatus.DELETED and time.monotonic() < deadline:
        time.sleep(1)
    local.stop_all(service)
    return result


def stop_engines(org) -> None:
    """Stop the engine processes of the bench org's services (started detached by the Celery worker)."""
    from deployments.drivers import local
    from deployments.models import Service

    for service in Service.objects.filter(org=org):
        local.stop_all(service)


def run_main(args) -> None:
    arrivals = make_day(day_s=args.day_s, peak_rps=args.peak_rps, seed=args.seed)
    peak, peak_conc = peak_instances(arrivals, args.day_s, args.target)
    print(
        f"day: {len(arrivals)} requests in {args.day_s:.0f} s; expected peak concurrency {peak_conc:.1f}; peak "
        f"instances {peak} (target {args.target} per instance, engine limit {args.max_num_seqs})",
        flush=True,
    )
    prepare_database()
    import django

    django.setup()
    logs = Path(tempfile.mkdtemp(prefix="autoscale-trace-"))
    print(f"logs: {logs}", flush=True)
    env = {
        "LOCAL_ENGINE_STARTUP_S": str(args.startup_s),
        "AUTOSCALE_TICK_S": str(args.tick_s),
        "MAAS_EMBEDDED_DIR": str(logs),
        "DEBUG": "0",
    }
    os.environ.update(env)
    procs = Processes(logs)
    world = None
    results = []
    try:
        world = setup_world(args.max_num_seqs)
        port = free_port()
        gateway = f"http://127.0.0.1:{port}"
        procs.start(
            "gateway",
            [
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
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
            ],
            env,
        )
        procs.start(
            "celery-worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "maas",
                "worker",
                "-l",
                "info",
                "-c",
                "2",
                "--without-gossip",
                "--without-mingle",
            ],
            env,
        )
        procs.start(
            "celery-beat",
            [sys.executable, "-m", "celery", "-A", "maas", "beat", "-l", "info", "-s", str(logs / "beat-schedule")],
            env,
        )
        procs.start("autoscaler", [sys.executable, "manage.py", "autoscale"], env)
        wait_http(gateway + "/v1/models")
        for scenario in args.scenarios:
            procs.check()
            results.append(
                run_scenario(
                    scenario, world=world, arrivals=arrivals, peak=peak, gateway=gateway, procs=procs, args=args
                )
            )
    finally:
        procs.stop_all()
        if world is not None:
            stop_engines(world[0])
    summary = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "requests": len(arrivals),
        "peak_instances": peak,
        "results": results,
    }
    (logs / "results.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print_table(summary, args)


def print_table(summary: dict, args) -> None:
    fixed = next((r for r in summary["results"] if r["scenario"] == "fixed"), None)
    print(
        f"\n| scenario | billed instance-s (vs fixed) | engine process instance-s | TTFT p50 / p95 / p99 (ms) | "
        f"failed / requests | within {args.ttft_goal_ms:.0f} ms (all / not woken) | woken | wake wait p50 / p99 / "
        "max (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in summary["results"]:
        saved = (
            f" ({1 - r['billed_instance_s'] / fixed['billed_instance_s']:.0%} less)" if fixed and r is not fixed else ""
        )
        wait = r["wake_wait_s"]
        waits = f"{wait[50]} / {wait[99]} / {r['wake_wait_max_s']}" if wait else "–"
        t = r["ttft_ms"]
        print(
            f"| {r['scenario']} | {r['billed_instance_s']:.0f}{saved} | {r['process_instance_s']:.0f} | {t[50]} / "
            f"{t[95]} / {t[99]} | {r['failed']} / {r['requests']} | {r['within_goal']:.2%} / "
            f"{r['within_goal_awake']:.2%} | {r['woken']} | {waits} |"
        )


def trace_main(args) -> None:
    arrivals = make_day(day_s=args.day_s, peak_rps=args.peak_rps, seed=args.seed)
    peak, peak_conc = peak_instances(arrivals, args.day_s, args.target)
    conc = expected_concurrency(arrivals, args.day_s)
    need = sum(max(1, math.ceil(c / args.target)) for c in conc)
    print(
        f"{len(arrivals)} requests; peak concurrency {peak_conc:.1f}; peak instances {peak}; fixed "
        f"{peak * args.day_s:.0f} instance-s; ceil(concurrency / target) per second, at least 1: {need}"
    )
    step = max(1, int(args.day_s // 48))
    for s in range(0, int(args.day_s), step):
        hour = 24 * s / args.day_s
        print(f"{hour:5.1f} h {s:4d} s  {'#' * round(conc[s])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "trace"):
        p = sub.add_parser(name)
        p.add_argument("--day-s", type=float, default=540, help="the compressed day's length in seconds")
        p.add_argument(
            "--peak-rps", type=float, default=12, help="requests per second at the day's peak (bursts double)"
        )
        p.add_argument("--seed", type=int, default=17)
        p.add_argument("--target", type=int, default=6, help="concurrent requests per instance (the policy's target)")
        if name == "run":
            p.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
            p.add_argument("--startup-s", type=float, default=20, help="an engine's start-up time (model load)")
            p.add_argument("--max-num-seqs", type=int, default=12, help="requests an instance runs at once")
            p.add_argument("--ttft-goal-ms", type=float, default=1000)
            p.add_argument("--window-s", type=int, default=30, help="the policy's scale-down window")
            p.add_argument("--idle-s", type=int, default=60, help="the policy's idle period before scale-to-zero")
            p.add_argument("--max-wake-wait-s", type=int, default=120)
            p.add_argument("--tick-s", type=float, default=5, help="AUTOSCALE_TICK_S")
            p.add_argument("--workers", type=int, default=1, help="gateway workers")
    c = sub.add_parser("client")
    for flag in ("--trace", "--url", "--key", "--model", "--out"):
        c.add_argument(flag, required=True)
    c.add_argument("--timeout-s", type=float, default=180)
    args = parser.parse_args()
    if args.command == "client":
        client_main(args)
    elif args.command == "trace":
        trace_main(args)
    else:
        run_main(args)


if __name__ == "__main__":
    main()
