"""Where a model can run and what it costs: variant fit against a region's GPU inventory, and instance prices.

Users never size GPUs: the platform walks a model's deployment variants in catalog order and takes the first that
fits a cluster of the region (runtime version available, per-GPU memory, GPUs per node or LeaderWorkerSet for
multi-node, enough free GPUs, cluster reachable and not cordoned). When nothing fits it says exactly why.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils.translation import gettext as _

from catalog.models import DeploymentVariant
from catalog.semver import SemverError, parse_range
from core.errors import ApplicationError
from core.money import quantize_rate
from deployments.models import Cluster, ClusterHealth, GpuPrice, Region

# GPU drivers report a little less memory than the marketing size (an "80 GB" H100 shows 81559 MiB, an "48 GB"
# L40S 46068 MiB): a GPU counts as N GB when it has at least this share of N GiB.
MEMORY_TOLERANCE = Decimal("0.93")
SUBSCRIPTION_DISCOUNT = Decimal("0.7")
HOURS_PER_MONTH = 24 * 30


@dataclass(frozen=True)
class Placement:
    cluster: Cluster
    variant: DeploymentVariant
    runtime_version: str
    image: str
    gpu_product: str
    gpus_per_node: int
    nodes_per_instance: int

    @property
    def gpu_count(self) -> int:
        return self.variant.gpu_count


def gpu_memory_gb(memory_mb) -> int:
    """The nominal size (GB) of a GPU reporting ``memory_mb`` MiB."""
    if not memory_mb:
        return 0
    return int(Decimal(memory_mb) / (1024 * MEMORY_TOLERANCE))


def _memory_fits(memory_mb, needed_gb: int) -> bool:
    return bool(memory_mb) and Decimal(memory_mb) >= needed_gb * 1024 * MEMORY_TOLERANCE


def runtime_version_for(variant) -> str | None:
    try:
        wanted = parse_range(variant.version_required)
    except SemverError:
        return None
    return wanted.best(settings.RUNTIME_VERSIONS.get(variant.runtime, []))


def image_for(runtime: str, version: str) -> str:
    return settings.RUNTIME_IMAGES[runtime].format(version=version)


def usable_clusters(region: Region) -> list[Cluster]:
    return [c for c in region.clusters.all() if not c.cordoned and c.health == ClusterHealth.READY]


def _variant_on_cluster(variant, cluster: Cluster, instances: int) -> tuple[str, int, int] | None:
    """(gpu_product, gpus_per_node, nodes_per_instance) if ``instances`` of ``variant`` fit ``cluster`` now."""
    options = []
    for product, entry in (cluster.inventory or {}).items():
        if not _memory_fits(entry.get("memory_mb"), variant.per_gpu_memory_gb):
            continue
        per_node = entry.get("max_per_node") or 0
        if per_node <= 0:
            continue
        if variant.gpu_count <= per_node:
            if (
                entry.get("max_free_per_node", 0) >= variant.gpu_count
                and entry.get("free", 0) >= variant.gpu_count * instances
            ):
                options.append((entry.get("memory_mb") or 0, product, variant.gpu_count, 1))
        elif cluster.has_lws and variant.gpu_count % per_node == 0:
            nodes = variant.gpu_count // per_node
            if entry.get("free", 0) >= variant.gpu_count * instances and entry.get("nodes", 0) >= nodes:
                options.append((entry.get("memory_mb") or 0, product, per_node, nodes))
    if not options:
        return None
    # The smallest GPU that fits: keep the big ones for the models that need them.
    _mem, product, per_node, nodes = min(options)
    return product, per_node, nodes


def place(model, region: Region, *, instances: int = 1, exclude_cluster: Cluster | None = None) -> Placement:
    """The first variant of ``model`` that fits ``region``; ApplicationError saying exactly why when none does."""
    variants = list(model.variants.all())
    clusters = [c for c in usable_clusters(region) if exclude_cluster is None or c.pk != exclude_cluster.pk]
    for variant in variants:
        version = runtime_version_for(variant)
        if version is None:
            continue
        for cluster in clusters:
            found = _variant_on_cluster(variant, cluster, instances)
            if found:
                product, per_node, nodes = found
                return Placement(
                    cluster=cluster,
                    variant=variant,
                    runtime_version=version,
                    image=image_for(variant.runtime, version),
                    gpu_product=product,
                    gpus_per_node=per_node,
                    nodes_per_instance=nodes,
                )
    raise ApplicationError(
        no_fit_reason(model, region, variants, clusters, instances), code="no_capacity", field="region"
    )


def no_fit_reason(model, region: Region, variants, clusters: list[Cluster], instances: int = 1) -> str:
    head = _("no variant of %(model)s fits %(region)s") % {"model": model.name, "region": region.code}
    supported = [v for v in variants if runtime_version_for(v)]
    if not supported:
        ranges = ", ".join(f"{v.runtime} {v.version_required}" for v in variants) or "—"
        return head + ": " + _("no runtime version the platform offers satisfies %(ranges)s") % {"ranges": ranges}
    needs = " " + _("or") + " "
    needs = needs.join(
        f"{v.gpu_count * (instances if instances > 1 else 1)}×{v.per_gpu_memory_gb} GB GPUs" for v in supported
    )
    if instances > 1:
        needs += " " + _("for %(n)d instances") % {"n": instances}
    if not region.clusters.exists():
        return head + ": " + _("needs %(needs)s; the region has no cluster") % {"needs": needs}
    if not clusters:
        return (
            head
            + ": "
            + _("needs %(needs)s; every cluster of the region is cordoned, unreachable or failing its checks")
            % {"needs": needs}
        )
    best = None  # (free on one node, product)
    for cluster in clusters:
        for product, entry in (cluster.inventory or {}).items():
            candidate = (entry.get("max_free_per_node", 0), product)
            if best is None or candidate > best:
                best = candidate
    if best is None or best[0] <= 0:
        largest = _("no free GPUs")
    else:
        largest = _("%(n)d× %(product)s per node") % {"n": best[0], "product": best[1]}
    needs_lws = any(
        v.gpu_count > max((e.get("max_per_node", 0) for c in clusters for e in (c.inventory or {}).values()), default=0)
        for v in supported
    )
    text = head + ": " + _("needs %(needs)s; largest free: %(largest)s") % {"needs": needs, "largest": largest}
    if needs_lws and not any(c.has_lws for c in clusters):
        crd_installed = any(ch.get("key") == "lws_crd" and ch.get("ok") for c in clusters for ch in c.checks or [])
        if crd_installed:
            text += " " + _("and the LeaderWorkerSet controller is not running")
        else:
            text += " " + _("and no LeaderWorkerSet CRD")
    return text


def fitting_regions(model) -> list[tuple[Region, Placement | None, str]]:
    """Every region with (placement, "") when one instance fits there, else (None, the reason)."""
    result: list[tuple[Region, Placement | None, str]] = []
    for region in Region.objects.prefetch_related("clusters"):
        try:
            result.append((region, place(model, region), ""))
        except ApplicationError as exc:
            result.append((region, None, exc.message))
    return result


# --- prices -------------------------------------------------------------------------------------------------


def _gpu_price(region: Region, gpu_product: str) -> GpuPrice | None:
    return GpuPrice.objects.filter(region=region, gpu_product=gpu_product).first()


def instance_prices(region: Region, gpu_product: str, gpu_count: int) -> tuple[Decimal, Decimal, str]:
    """(hourly, monthly, currency) of one instance holding ``gpu_count`` GPUs of ``gpu_product`` in ``region``."""
    row = _gpu_price(region, gpu_product)
    if row is None:
        hourly_gpu, monthly_gpu, currency = Decimal(settings.DEFAULT_GPU_HOURLY_PRICE), None, settings.CURRENCY
    else:
        hourly_gpu, monthly_gpu, currency = row.hourly_price, row.monthly_price, row.currency
    if monthly_gpu is None:
        monthly_gpu = hourly_gpu * HOURS_PER_MONTH * SUBSCRIPTION_DISCOUNT
    return quantize_rate(hourly_gpu * gpu_count), quantize_rate(monthly_gpu * gpu_count), currency
