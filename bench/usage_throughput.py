"""Usage ingestion and per-token charging throughput: records/s on a backlog, and lag when fed at a given rate.

    python bench/usage_throughput.py --backlog 200000 --orgs 20 --rate 2000 7400 --seconds 20

Phases, each on an empty usage table:

1. **backlog**: ``--backlog`` records in the gateway's shape (``gateway/core.py``, public model, correct cost) are
   appended to the usage stream, then one ingester (``metering.ingestion.ingest_batch``, batch ``--ingest-batch``,
   what ``manage.py ingest_usage`` runs) drains it; then one charging loop (``usage_charge_pending`` until it
   returns 0, what ``billing.tasks.charge_usage_task`` runs) charges every record. Both report records/s.
2. **rate** (per ``--rate``): a feeder process appends records at that rate for ``--seconds`` (pipelined XADDs every
   10 ms, stamped with the time of the append as the request's end) while one ingester process and one charging
   process run their loops. Lag per record is read back from PostgreSQL: ingested ``created_at`` − request end, and
   the charge's ``created_at`` − request end; the table gives p50/p99/max, and whether the backlog drained.

Needs PostgreSQL (``DATABASE_URL``; the database is created and migrated on first use, default
``postgres://postgres@127.0.0.1:5432/maas_usage_bench``) and starts its own ``redis-server`` (``--redis-port``, in a
temporary folder, append-only file with ``everysec`` as shipped). ``--code DIR`` imports the platform from another
checkout (the baseline: ``git archive <commit> | tar -x -C DIR``) with the same bench.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/maas_usage_bench")
os.environ.setdefault("SECRET_KEY", "bench-secret-key")
os.environ.setdefault("ENCRYPTION_KEYS", "T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js=")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")
os.environ["GATEWAY_REDIS_PREFIX"] = "bench-usage:"


def code_path(code: str | None) -> Path:
    return Path(code).resolve() if code else REPO


def django_setup(code: str | None) -> None:
    sys.path.insert(0, str(code_path(code)))
    import django

    django.setup()


def start_redis(port: int, directory: Path, appendfsync: str = "everysec") -> subprocess.Popen:
    """A throwaway redis-server; ``appendfsync`` everysec, always, no, or off (no persistence at all)."""
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
         *(["--appendonly", "no"] if appendfsync == "off" else ["--appendonly", "yes", "--appendfsync", appendfsync]),
         "--logfile", str(directory / "redis.log")],
    )  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def prepare_database(code: str | None) -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=code_path(code), check=True)


def setup_world(n_orgs: int) -> dict:
    """A public model and ``n_orgs`` orgs with a key each; returns what the feeder needs to build records."""
    from datetime import date
    from decimal import Decimal

    from billing.selectors import token_price_histories
    from billing.services.prices import token_prices_seed
    from catalog.models import CatalogModel
    from tenancy.models import Organization
    from tenancy.services import apikey_create

    model, _ = CatalogModel.objects.get_or_create(
        slug="bench-chat",
        defaults=dict(
            name="bench", display_name="bench", publisher="bench", description_zh="-", description_en="-",
            tasks=["chat"], parameters_b=Decimal("1"), context_length=32768, quantization="bf16", license="mit",
            source_hub="huggingface", source_repo="bench/bench", currency="CNY",
            input_price_per_1k=Decimal("0.001"), output_price_per_1k=Decimal("0.002"),
            spec_updated=date(2026, 11, 21), spec_file="bench.yaml", spec_hash="0" * 64,
        ),
    )  # fmt: skip
    token_prices_seed(catalog_model_ids=[model.pk])
    orgs = []
    for i in range(n_orgs):
        org, _ = Organization.objects.get_or_create(namespace=f"ubench-{i}", defaults={"name": f"Usage bench {i}"})
        key, _raw = apikey_create(org=org, name=f"bench-{int(time.time())}")
        orgs.append((str(org.pk), str(key.pk)))
    from django.utils import timezone

    rates = token_price_histories([model.pk])[model.pk].at(timezone.now())
    return {"orgs": orgs, "model": model.pk, "rates": rates}


def clear_usage() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE billing_usagecharge, gateway_usagerecord, billing_ledgerentry CASCADE;"
            " UPDATE billing_billingaccount SET balance = 0, overdrawn_since = NULL"
        )


def record(world: dict, i: int, now: float) -> bytes:
    import orjson

    from billing.pricing import token_amount

    org_id, key_id = world["orgs"][i % len(world["orgs"])]
    prompt, completion = 200 + i % 300, 16 + i % 64
    rates = world["rates"]
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()), "org_id": org_id, "api_key_id": key_id, "user_id": None, "source": "api",
            "endpoint": "chat.completions", "model_id": "public/bench-chat", "catalog_model_id": world["model"],
            "service_id": None, "public": True, "replica": "sim-1", "prompt_tokens": prompt,
            "completion_tokens": completion, "cached_tokens": 0, "latency_ms": 180, "ttft_ms": 20, "status": "ok",
            "http_status": 200, "error_code": "", "stream": True,
            "prompt_hash": hashlib.sha256(str(i).encode()).hexdigest(), "params": {"max_tokens": 64},
            "served_model_version": "public/bench", "cost": str(token_amount(rates, prompt_tokens=prompt,
            completion_tokens=completion, cached_tokens=0)), "currency": rates.currency,
            "started_at": now - 0.18, "finished_at": now,
        }
    )  # fmt: skip


def append(client, world: dict, start: int, n: int) -> None:
    from metering.ingestion import stream_key

    pipe = client.pipeline(transaction=False)
    now = time.time()
    for i in range(start, start + n):
        pipe.xadd(stream_key(), {"r": record(world, i, now)})
    pipe.execute()


def backlog(args, world: dict) -> dict:
    from billing.services import usage_charge_pending
    from core.redis import client as sredis
    from metering.ingestion import ensure_group, ingest_batch, pending_count

    clear_usage()
    client = sredis()
    ensure_group(client)
    for start in range(0, args.backlog, 5000):
        append(client, world, start, min(5000, args.backlog - start))
    assert pending_count() >= args.backlog
    t0, ingested = time.perf_counter(), 0
    while handled := ingest_batch(consumer="bench", count=args.ingest_batch):
        ingested += handled
    ingest_s = time.perf_counter() - t0
    t0, charged = time.perf_counter(), 0
    while done := usage_charge_pending():
        charged += done
    charge_s = time.perf_counter() - t0
    return {
        "ingested": ingested, "ingest_s": ingest_s, "ingest_rps": ingested / ingest_s,
        "charged": charged, "charge_s": charge_s, "charge_rps": charged / charge_s,
    }  # fmt: skip


def _feeder(args, world, rate: int, stop_at: float, counter) -> None:
    django_setup(args.code)
    from core.redis import client as sredis

    client, sent, t0 = sredis(), 0, time.monotonic()
    while (now := time.monotonic()) < stop_at:
        due = int((now - t0) * rate) - sent
        if due > 0:
            append(client, world, sent, due)
            sent += due
        time.sleep(0.01)
    counter.value = sent


def _ingester(args, stop) -> None:
    django_setup(args.code)
    from metering.ingestion import ingest_batch

    while not stop.is_set():
        ingest_batch(consumer="bench-rate", count=args.ingest_batch, block_ms=200)


def _charger(args, stop) -> None:
    django_setup(args.code)
    from billing.services import usage_charge_pending

    while not stop.is_set():
        if not usage_charge_pending():
            time.sleep(0.05)


def at_rate(args, world: dict, rate: int) -> dict:
    from django.db import connection

    from metering.ingestion import pending_count

    clear_usage()
    connection.close()
    stop, sent = mp.Event(), mp.Value("q", 0)
    stop_at = time.monotonic() + args.seconds
    procs = [
        mp.Process(target=_feeder, args=(args, world, rate, stop_at, sent)),
        mp.Process(target=_ingester, args=(args, stop)),
        mp.Process(target=_charger, args=(args, stop)),
    ]
    for p in procs:
        p.start()
    procs[0].join()
    # Grace: what is left is the backlog; give it a few seconds to drain, then read the lags.
    deadline = time.monotonic() + args.grace
    from billing.models import UsageCharge

    while time.monotonic() < deadline and (pending_count() or UsageCharge.objects.count() < sent.value):
        time.sleep(0.25)
    stop.set()
    for p in procs[1:]:
        p.join(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT count(*),
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.created_at - r.finished_at)),
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.created_at - r.finished_at)),
                 max(extract(epoch FROM r.created_at - r.finished_at)),
                 count(c.id),
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.created_at - r.finished_at)),
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM c.created_at - r.finished_at)),
                 max(extract(epoch FROM c.created_at - r.finished_at))
               FROM gateway_usagerecord r LEFT JOIN billing_usagecharge c ON c.usage_record_id = r.id"""
        )
        row = cursor.fetchone()
    keys = ("ingested", "ingest_p50", "ingest_p99", "ingest_max", "charged", "charge_p50", "charge_p99", "charge_max")
    return {"rate": rate, "sent": sent.value, **dict(zip(keys, row, strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--rate", type=int, nargs="*", default=[2000, 7400])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--grace", type=float, default=30, help="seconds allowed to drain after the feed stops")
    parser.add_argument("--ingest-batch", type=int, default=500)
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument("--code", default=None, help="import the platform from this checkout (baseline)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="usage-bench-redis-"))
    redis_server = start_redis(args.redis_port, directory)
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
    try:
        prepare_database(args.code)
        django_setup(args.code)
        from django.conf import settings

        print(f"code: {code_path(args.code)}; charge batch {settings.BILLING_CHARGE_BATCH_SIZE}; {args.orgs} orgs")
        world = setup_world(args.orgs)
        if args.backlog:
            r = backlog(args, world)
            print(
                f"backlog {args.backlog}: ingest {r['ingested']} in {r['ingest_s']:.1f} s = {r['ingest_rps']:,.0f}/s;"
                f" charge {r['charged']} in {r['charge_s']:.1f} s = {r['charge_rps']:,.0f}/s",
                flush=True,
            )
        for rate in args.rate:
            r = at_rate(args, world, rate)
            print(
                f"rate {rate}/s for {args.seconds:.0f} s: sent {r['sent']}, ingested {r['ingested']}"
                f" (lag p50 {r['ingest_p50']:.2f} p99 {r['ingest_p99']:.2f} max {r['ingest_max']:.2f} s),"
                f" charged {r['charged']} (lag p50 {r['charge_p50']:.2f} p99 {r['charge_p99']:.2f}"
                f" max {r['charge_max']:.2f} s)",
                flush=True,
            )
    finally:
        redis_server.terminate()
        redis_server.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
