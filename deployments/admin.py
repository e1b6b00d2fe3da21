"""Platform admin for regions, GPU prices, clusters and services (kubeconfigs are never shown)."""

from django.contrib import admin, messages

from core.errors import ApplicationError
from core.forms import actor_of
from deployments import services
from deployments.models import Cluster, GpuPrice, GpuQuota, Region, Replica, Service, ServiceEvent


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["code", "name_zh", "name_en", "position"]
    ordering = ["position", "code"]


@admin.register(GpuPrice)
class GpuPriceAdmin(admin.ModelAdmin):
    list_display = ["region", "gpu_product", "hourly_price", "monthly_price", "currency"]
    list_filter = ["region"]
    search_fields = ["gpu_product"]


@admin.register(GpuQuota)
class GpuQuotaAdmin(admin.ModelAdmin):
    """Quotas are set through ``gpu_quota_set`` (checked and audited), as on the console's GPU quotas page."""

    list_display = ["org", "region", "max_gpus"]
    list_filter = ["region"]
    search_fields = ["org__name", "org__namespace"]
    list_select_related = ["org", "region"]
    autocomplete_fields = ["org"]

    def get_readonly_fields(self, request, obj=None):
        return ["org", "region"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        try:
            saved = services.gpu_quota_set(
                actor=actor_of(request), org=obj.org, region=obj.region, max_gpus=obj.max_gpus
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return
        if saved is not None:
            obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.gpu_quota_set(actor=actor_of(request), org=obj.org, region=obj.region, max_gpus=None)

    def delete_queryset(self, request, queryset):
        for quota in queryset.select_related("org", "region"):
            self.delete_model(request, quota)


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "driver", "health", "cordoned", "server_version", "last_checked_at"]
    list_filter = ["region", "driver", "health", "cordoned"]
    # Onboarding (probe, checks, encryption) happens in the console or with `manage.py register_cluster`.
    exclude = ["kubeconfig_encrypted"]
    readonly_fields = [
        "driver",
        "server_url",
        "server_version",
        "health",
        "last_error",
        "last_checked_at",
        "inventory",
        "nodes",
        "checks",
        "has_lws",
        "created_at",
        "context",
    ]

    def has_add_permission(self, request):
        return False


class ReplicaInline(admin.TabularInline):
    model = Replica
    extra = 0
    can_delete = False
    readonly_fields = ["name", "base_url", "ready", "pid", "port", "observed_at"]


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["name", "org", "catalog_model", "region", "cluster", "status", "instances", "ready_instances"]
    list_filter = ["status", "region", "cluster"]
    search_fields = ["name", "org__namespace"]
    list_select_related = ["org", "catalog_model", "region", "cluster"]
    inlines = [ReplicaInline]

    def get_readonly_fields(self, request, obj=None):
        # Changes go through the console or the API so that the reconcile loop, events and billing follow.
        return [f.name for f in Service._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ServiceEvent)
class ServiceEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "service", "kind", "status", "reason", "billable_instances"]
    list_filter = ["kind", "status"]
    list_select_related = ["service__org"]

    def has_change_permission(self, request, obj=None):
        return False
