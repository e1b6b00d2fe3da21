from django.contrib import admin

from catalog.models import CatalogModel, DeploymentVariant


class VariantInline(admin.TabularInline):
    model = DeploymentVariant
    extra = 0


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "publisher",
        "parameters_b",
        "context_length",
        "input_price_per_1k",
        "output_price_per_1k",
        "currency",
        "listed",
        "spec_updated",
    ]
    list_filter = ["listed", "publisher"]
    search_fields = ["slug", "name", "display_name", "publisher"]
    list_editable = ["input_price_per_1k", "output_price_per_1k", "listed"]
    inlines = [VariantInline]
