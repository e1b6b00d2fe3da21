"""`manage.py seed_platform`: regions, the local cluster, the platform org and its public services (idempotent).

Every listed catalog model that fits some region gets a public service (``public/<slug>``), autoscaling: the three
small ones of ``ALWAYS_ON`` keep one instance (minimum 1), so that a fresh ``./dev up`` answers them at once and the
walkthroughs, demo and browser tests never wait for a start; every other one is created Idle (minimum 0), holds no
GPU and wakes on its first request (``deployments.services.public_service_create``).
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import CatalogModel
from core.errors import ApplicationError
from deployments.drivers import local
from deployments.models import PUBLIC_NAMESPACE, Region, Service
from deployments.placement import fitting_regions
from deployments.services import local_cluster_create, public_service_create
from tenancy.models import Organization

REGIONS = [("cn-shanghai-2", "上海二区", "Shanghai 2", 10), ("cn-beijing-1", "北京一区", "Beijing 1", 20)]
LOCAL_CLUSTER = "local"
LOCAL_REGION = "cn-shanghai-2"
ALWAYS_ON = ["qwen2-0.5b-instruct", "qwen2.5-7b-instruct", "bge-m3"]
PUBLIC_MAX_INSTANCES = 2


def public_service_name(slug: str) -> str:
    return slug.replace(".", "-")


class Command(BaseCommand):
    help = (
        "Create regions, the local (process) cluster, the platform org and a public service of every catalog model "
        "that fits a region (the small ones always on, the others at zero until a request wakes them)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--gpus", type=int, default=local.DEFAULT_LOCAL_GPUS, help="GPUs the local cluster advertises"
        )
        parser.add_argument("--gpu-memory-gb", type=int, default=local.DEFAULT_LOCAL_GPU_MEMORY_GB)
        parser.add_argument(
            "--models", nargs="*", default=None, help="catalog slugs served as public/<slug> (default: all that fit)"
        )
        parser.add_argument(
            "--always-on", nargs="*", default=ALWAYS_ON, help="of those, the ones kept at one instance at least"
        )

    def handle(self, *args, gpus, gpu_memory_gb, models, always_on, **options):
        with transaction.atomic():
            for code, zh, en, position in REGIONS:
                Region.objects.update_or_create(
                    code=code, defaults={"name_zh": zh, "name_en": en, "position": position}
                )
            region = Region.objects.get(code=LOCAL_REGION)
            cluster = local_cluster_create(name=LOCAL_CLUSTER, region=region, gpus=gpus, gpu_memory_gb=gpu_memory_gb)
            org, _created = Organization.objects.get_or_create(
                namespace=PUBLIC_NAMESPACE, defaults={"name": "Platform"}
            )
        if models is None:
            catalog = list(CatalogModel.objects.filter(listed=True).order_by("slug"))
            # The always-on ones first: they take their GPUs before the others are checked for a fit.
            catalog.sort(key=lambda m: m.slug not in always_on)
        else:
            catalog = []
            for slug in models:
                model = CatalogModel.objects.filter(slug=slug).first()
                if model is None:
                    self.stderr.write(f"skipped {slug}: not in the catalog (run sync_catalog)")
                else:
                    catalog.append(model)
        idle = 0
        for model in catalog:
            name = public_service_name(model.slug)
            if Service.objects.for_org(org).live().filter(name=name).exists():
                continue
            fits = [(r, p) for r, p, _reason in fitting_regions(model) if p is not None]
            if not fits:
                self.stderr.write(f"skipped {model.slug}: no region has GPUs it fits")
                continue
            where = next((r for r, _p in fits if r.pk == region.pk), fits[0][0])
            minimum = 1 if model.slug in always_on else 0
            try:
                # The platform itself deploys them (no user is a member of the platform org); their cost is its own.
                public_service_create(
                    org=org,
                    catalog_model=model,
                    region=where,
                    name=name,
                    min_instances=minimum,
                    max_instances=PUBLIC_MAX_INSTANCES,
                )
            except ApplicationError as exc:
                self.stderr.write(f"skipped {model.slug}: {exc.message}")
                continue
            idle += minimum == 0
        self.stdout.write(
            self.style.SUCCESS(
                f"platform ready: regions {', '.join(r[0] for r in REGIONS)}, cluster {cluster.name} "
                f"({gpus}× {local.LOCAL_GPU_PRODUCT}), public services in org '{PUBLIC_NAMESPACE}'"
                + (f" ({idle} new ones idle until their first request)" if idle else "")
            )
        )
