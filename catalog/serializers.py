from rest_framework import serializers

from catalog.models import CatalogModel, DeploymentVariant


class DeploymentVariantSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentVariant
        fields = [
            "position",
            "runtime",
            "version_required",
            "gpu_type",
            "gpu_count",
            "per_gpu_memory_gb",
            "cpu",
            "memory_gb",
            "custom_runtime_args",
        ]


class CatalogModelSerializer(serializers.ModelSerializer):
    public_model_id = serializers.CharField(read_only=True)
    input_price_per_1k = serializers.DecimalField(max_digits=14, decimal_places=6, coerce_to_string=True)
    output_price_per_1k = serializers.DecimalField(max_digits=14, decimal_places=6, coerce_to_string=True)

    class Meta:
        model = CatalogModel
        fields = [
            "slug",
            "public_model_id",
            "name",
            "display_name",
            "publisher",
            "description_zh",
            "description_en",
            "tasks",
            "parameters_b",
            "active_parameters_b",
            "context_length",
            "quantization",
            "license",
            "source_hub",
            "source_repo",
            "currency",
            "input_price_per_1k",
            "output_price_per_1k",
            "spec_updated",
        ]


class CatalogModelDetailSerializer(CatalogModelSerializer):
    variants = DeploymentVariantSerializer(many=True, read_only=True)

    class Meta(CatalogModelSerializer.Meta):
        fields = CatalogModelSerializer.Meta.fields + ["variants"]
