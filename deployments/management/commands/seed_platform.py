"""`manage.py seed_platform`: regions, the local cluster, the platform org and its public services (idempotent)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import CatalogModel
from core.errors import ApplicationError
from deployments.drivers import local
from deployments.models import PUBLIC_NAMESPACE, Region, Service
from deployments.services import local_cluster_create, service_create
from tenancy.models import Organization

REGIONS = [("cn-shanghai-2", "上海二区", "Shanghai 2", 10), ("cn-beijing-1", "北京一区", "Beijing 1", 20)]
LOCAL_CLUSTER = "local"
LOCAL_REGION = "cn-shanghai-2"
PUBLIC_MODELS = ["qwen2-0.5b-instruct", "qwen2.5-7b-instruct", "bge-m3"]


class Command(BaseCommand):
    help = "Create regions, the local (process) cluster, the platform org and public services of small models."

    def add_arguments(self, parser):
        parser.add_argument(
            "--gpus", type=int, default=local.DEFAULT_LOCAL_GPUS, help="GPUs the local cluster advertises"
        )
        parser.add_argument("--gpu-memory-gb", type=int, default=local.DEFAULT_LOCAL_GPU_MEMORY_GB)
        parser.add_argument("--models", nargs="*", default=PUBLIC_MODELS, help="catalog slugs served as public/<slug>")

    def handle(self, *args, gpus, gpu_memory_gb, models, **options):
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
        for slug in models:
            model = CatalogModel.objects.filter(slug=slug).first()
            if model is None:
                self.stderr.write(f"skipped {slug}: not in the catalog (run sync_catalog)")
                continue
            if Service.objects.for_org(org).live().filter(name=slug.replace(".", "-")).exists():
                continue
            try:
                # The platform itself deploys them (actor None): no user is a member of the platform org.
                service_create(
                    org=org, actor=None, catalog_model=model, region=region, name=slug.replace(".", "-"), instances=1
                )
            except ApplicationError as exc:
                self.stderr.write(f"skipped {slug}: {exc.message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"platform ready: regions {', '.join(r[0] for r in REGIONS)}, cluster {cluster.name} "
                f"({gpus}× {local.LOCAL_GPU_PRODUCT}), public services in org '{PUBLIC_NAMESPACE}'"
            )
        )
