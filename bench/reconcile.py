"""Reconcile pass cost against the in-memory Kubernetes API test server, for growing numbers of services.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/maas_bench REDIS_URL=redis://127.0.0.1:6379/0 \
        python bench/reconcile.py --sizes 100 250 500

For each size N: a fresh test database (test_<name>, dropped afterwards), one cluster onboarded through the real
probe with enough 8-GPU nodes, N one-GPU services deployed through service_create, then three cluster passes
(deployments.reconcile.reconcile_cluster): "create" (server-side apply of every workload + batched observation),
"converge" (pods Ready: statuses and meters written) and "steady" (nothing to change). Reports wall time and
Kubernetes API calls per pass, and per service.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings_test")


def run(size: int) -> list[tuple[str, float, int, str]]:
    from django.core.management import call_command
    from django.db import connection

    from catalog.models import CatalogModel
    from deployments import reconcile
    from deployments.models import Region, Service, ServiceStatus
    from deployments.services import cluster_register, service_create
    from tenancy.models import Organization
    from tests.support.kubeapi import run_kube_api

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    rows = []
    try:
        call_command("sync_catalog", verbosity=0)
        model = CatalogModel.objects.prefetch_related("variants").get(slug="qwen2-0.5b-instruct")
        region = Region.objects.create(code="cn-shanghai-2", name_zh="上海二区", name_en="Shanghai 2")
        orgs = [Organization.objects.create(name=f"Org {i}", namespace=f"org-{i}") for i in range(10)]
        nodes = [{"name": f"gpu-{i}"} for i in range(size // 8 + 1)]
        with run_kube_api(nodes=nodes, start_after=None) as api:
            cluster = cluster_register(actor=None, name="bench", region=region, kubeconfig=api.kubeconfig())
            for i in range(size):
                service_create(org=orgs[i % len(orgs)], actor=None, catalog_model=model, region=region, name=f"s{i}")
            for label in ("create", "converge", "steady"):
                if label == "converge":
                    api.set_auto(start_after=0.0, ready_after=0.0)
                api.reset_log()
                started = time.perf_counter()
                reconcile.reconcile_cluster(cluster.pk)
                wall = time.perf_counter() - started
                running = Service.objects.filter(status=ServiceStatus.RUNNING).count()
                rows.append((label, wall, len(api.request_log), f"{running}/{size} Running"))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 250, 500])
    args = parser.parse_args()
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    print("| services | pass | wall (s) | ms / service | API calls | calls / service | result |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for label, wall, calls, result in run(size):
            print(
                f"| {size} | {label} | {wall:.2f} | {1000 * wall / size:.1f} | {calls} | {calls / size:.2f} | {result} |",  # noqa: E501
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
