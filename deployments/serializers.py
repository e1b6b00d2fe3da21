"""Serializers of the services management API."""

from django.core.validators import validate_slug
from rest_framework import serializers

from catalog.models import validate_model_slug
from deployments.models import BillingMode, Service, dns1123_label
from deployments.services import MAX_INSTANCES


class ServiceSerializer(serializers.ModelSerializer):
    model_id = serializers.CharField(read_only=True, help_text="The id to call on /v1: <org namespace>/<service name>.")
    model = serializers.CharField(source="catalog_model.slug", read_only=True)
    region = serializers.CharField(source="region.code", read_only=True)
    instances = serializers.IntegerField(read_only=True)
    ready_instances = serializers.IntegerField(read_only=True)
    running = serializers.BooleanField(source="desired_running", read_only=True)
    hourly_price = serializers.DecimalField(max_digits=14, decimal_places=6, read_only=True)
    monthly_price = serializers.DecimalField(max_digits=14, decimal_places=6, read_only=True, allow_null=True)

    class Meta:
        model = Service
        fields = [
            "id",
            "name",
            "model_id",
            "model",
            "region",
            "status",
            "status_reason",
            "status_message",
            "instances",
            "ready_instances",
            "running",
            "billing_mode",
            "hourly_price",
            "monthly_price",
            "currency",
            "runtime",
            "runtime_version",
            "gpu_product",
            "gpu_count",
            "nodes_per_instance",
            "max_model_len",
            "created_at",
            "running_since",
        ]
        read_only_fields = fields


class ServiceCreateSerializer(serializers.Serializer):
    # The same rules as the models' fields, so the schema states them and a blank or malformed value is refused here,
    # before any lookup, the same way every time.
    name = serializers.CharField(
        max_length=40,
        validators=[dns1123_label],
        help_text="DNS-1123 label, unique among the organization's services.",
    )
    model = serializers.CharField(
        max_length=100, validators=[validate_model_slug], help_text="Catalog model slug, e.g. qwen2.5-7b-instruct."
    )
    region = serializers.CharField(
        max_length=40, validators=[validate_slug], help_text="Region code, e.g. cn-shanghai-2."
    )
    instances = serializers.IntegerField(min_value=1, max_value=MAX_INSTANCES, default=1)
    billing_mode = serializers.ChoiceField(choices=BillingMode.choices, default=BillingMode.PAYG)


class ServiceScaleSerializer(serializers.Serializer):
    instances = serializers.IntegerField(min_value=1, max_value=MAX_INSTANCES)
