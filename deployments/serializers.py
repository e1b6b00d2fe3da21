"""Serializers of the services management API."""

from django.core.validators import validate_slug
from rest_framework import serializers

from catalog.models import validate_model_slug
from deployments.models import BillingMode, ManualScale, ScalingMode, ScalingTarget, Service, dns1123_label
from deployments.policy import TARGET_RANGES, WINDOW_RANGES, ScalingPolicy
from deployments.services import MAX_INSTANCES

_TARGET_LOW = min(low for low, _high in TARGET_RANGES.values())
_TARGET_HIGH = max(high for _low, high in TARGET_RANGES.values())


class ScalingPolicySerializer(serializers.Serializer):
    """A service's scaling policy. Writes are partial: a field left out keeps its value. The bounds and ranges
    across fields (min ≤ max ≤ the organization's GPU quota, the target's range per kind, min 0 only for
    pay-as-you-go) are checked by the service and refused as ``{"detail", "code", "field"}``."""

    scaling_mode = serializers.ChoiceField(
        choices=ScalingMode.choices, help_text="fixed: the instances you set; autoscale: between min and max."
    )
    min_instances = serializers.IntegerField(
        min_value=0, max_value=MAX_INSTANCES, help_text="0 (scale to zero when idle) only for pay-as-you-go."
    )
    max_instances = serializers.IntegerField(min_value=1, max_value=MAX_INSTANCES)
    scaling_target = serializers.ChoiceField(choices=ScalingTarget.choices)
    target_value = serializers.IntegerField(
        min_value=_TARGET_LOW,
        max_value=_TARGET_HIGH,
        help_text="concurrency: 1-1000 requests per instance; ttft_p95: 50-60000 ms; kv_cache: 10-95 %.",
    )
    scale_down_window_s = serializers.IntegerField(
        min_value=WINDOW_RANGES["scale_down_window_s"][0], max_value=WINDOW_RANGES["scale_down_window_s"][1]
    )
    idle_to_zero_s = serializers.IntegerField(
        min_value=WINDOW_RANGES["idle_to_zero_s"][0], max_value=WINDOW_RANGES["idle_to_zero_s"][1]
    )
    max_wake_wait_s = serializers.IntegerField(
        min_value=WINDOW_RANGES["max_wake_wait_s"][0], max_value=WINDOW_RANGES["max_wake_wait_s"][1]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False

    def policy(self, service: Service | None = None) -> ScalingPolicy:
        """The validated fields over the service's policy (a new service: the defaults)."""
        base = ScalingPolicy.of(service) if service is not None else ScalingPolicy()
        return base.merged(**self.validated_data)


class ServiceSerializer(serializers.ModelSerializer):
    model_id = serializers.CharField(read_only=True, help_text="The id to call on /v1: <org namespace>/<service name>.")
    model = serializers.CharField(source="catalog_model.slug", read_only=True)
    region = serializers.CharField(source="region.code", read_only=True)
    instances = serializers.IntegerField(read_only=True)
    ready_instances = serializers.IntegerField(read_only=True)
    running = serializers.BooleanField(source="desired_running", read_only=True)
    hourly_price = serializers.DecimalField(max_digits=14, decimal_places=6, read_only=True)
    monthly_price = serializers.DecimalField(max_digits=14, decimal_places=6, read_only=True, allow_null=True)
    scaling = ScalingPolicySerializer(source="*", read_only=True)

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
            "scaling",
        ]
        read_only_fields = fields


class ServiceCreateSerializer(ScalingPolicySerializer):
    """A deploy; the scaling policy's fields are optional (left out: fixed at ``instances``)."""

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

    def __init__(self, *args, **kwargs):
        serializers.Serializer.__init__(self, *args, **kwargs)
        for name in ScalingPolicy.names():
            self.fields[name].required = False

    def policy(self, service: Service | None = None) -> ScalingPolicy | None:  # type: ignore[override]
        """The policy asked for, over a fixed one at the instance count; None when no policy field was sent."""
        given = {k: v for k, v in self.validated_data.items() if k in ScalingPolicy.names()}
        if not given:
            return None
        instances = self.validated_data["instances"]
        return ScalingPolicy(min_instances=instances, max_instances=instances).merged(**given)


class ServiceScaleSerializer(serializers.Serializer):
    instances = serializers.IntegerField(min_value=1, max_value=MAX_INSTANCES)
    on_autoscale = serializers.ChoiceField(
        choices=ManualScale.choices,
        default=ManualScale.FIXED,
        help_text="For an autoscaling service: fixed switches it to fixed at this count; bounds keeps autoscaling "
        "with the minimum raised (scale-up) or the maximum lowered (scale-down) to the count.",
    )
