"""Management API for model services (/api/services): tenant-scoped, session or sk- key."""

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog import selectors as catalog_selectors
from core.errors import ApplicationError
from core.openapi import error_response
from deployments import services
from deployments.models import Region, Service
from deployments.serializers import (
    ScalingPolicySerializer,
    ServiceCreateSerializer,
    ServiceScaleSerializer,
    ServiceSerializer,
)
from tenancy.api import OrgScopedViewSetMixin

PAYMENT_REQUIRED = error_response("Subscription mode: the balance does not cover the month (insufficient_quota).")
BEING_DELETED = error_response("The service is being deleted (deleted).")


def _org(request):
    return getattr(request, "api_org", None) or getattr(request, "org", None)


@extend_schema_view(
    list=extend_schema(summary="List the organization's model services"),
    retrieve=extend_schema(summary="A model service"),
    create=extend_schema(
        summary="Deploy a catalog model as a dedicated service, fixed or with a scaling policy",
        request=ServiceCreateSerializer,
        responses={201: ServiceSerializer, 402: PAYMENT_REQUIRED},
        examples=[
            OpenApiExample(
                "Qwen2.5 7B Instruct",
                value={"name": "my-qwen", "model": "qwen2.5-7b-instruct", "region": "cn-shanghai-2", "instances": 1},
                request_only=True,
            ),
        ],
    ),
    destroy=extend_schema(
        summary="Delete a service (its instances stop; billing stops at once)", responses={202: ServiceSerializer}
    ),
)
class ServiceViewSet(OrgScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    scoped_model = Service
    serializer_class = ServiceSerializer
    lookup_value_regex = r"[0-9a-fA-F-]{36}"

    def queryset_hook(self, queryset):
        return queryset.live().select_related("catalog_model", "region", "org").order_by("-created_at")

    def create(self, request):
        org = _org(request)
        if org is None:
            raise ApplicationError("No organization.", code="forbidden", status=403)
        payload = ServiceCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        model = catalog_selectors.listed_models().prefetch_related("variants").filter(slug=data["model"]).first()
        if model is None:
            raise ApplicationError(f"unknown model {data['model']!r}", field="model")
        region = Region.objects.filter(code=data["region"]).first()
        if region is None:
            raise ApplicationError(f"unknown region {data['region']!r}", field="region")
        user = request.user if getattr(request.user, "is_authenticated", False) else None
        service = services.service_create(
            org=org,
            actor=user,
            catalog_model=model,
            region=region,
            name=data["name"],
            instances=data["instances"],
            billing_mode=data["billing_mode"],
            policy=payload.policy(),
        )
        return Response(ServiceSerializer(service).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        service = services.service_delete(service=self.get_object(), actor=self._actor())
        return Response(ServiceSerializer(service).data, status=status.HTTP_202_ACCEPTED)

    def _actor(self):
        return self.request.user if getattr(self.request.user, "is_authenticated", False) else None

    @extend_schema(
        summary="Change the number of instances",
        request=ServiceScaleSerializer,
        responses={200: ServiceSerializer, 402: PAYMENT_REQUIRED, 409: BEING_DELETED},
    )
    @action(detail=True, methods=["post"])
    def scale(self, request, pk=None):
        payload = ServiceScaleSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        service = services.service_scale(
            service=self.get_object(),
            actor=self._actor(),
            instances=payload.validated_data["instances"],
            on_autoscale=payload.validated_data["on_autoscale"],
        )
        return Response(ServiceSerializer(service).data)

    @extend_schema(
        summary="Change the scaling policy (fields left out keep their values)",
        description=(
            "Switching to autoscale brings the instances within the new bounds at once. Refused with 400 and the "
            "field: a value out of range, min above max, min 0 for a subscription, or more GPUs than the "
            "organization's quota in the region (code quota_exceeded; an autoscaling service counts at its maximum)."
        ),
        request=ScalingPolicySerializer,
        responses={200: ServiceSerializer, 409: BEING_DELETED},
        examples=[
            OpenApiExample(
                "Autoscale on concurrency",
                value={
                    "scaling_mode": "autoscale",
                    "min_instances": 1,
                    "max_instances": 4,
                    "scaling_target": "concurrency",
                    "target_value": 8,
                },
                request_only=True,
            )
        ],
    )
    @action(detail=True, methods=["patch"])
    def scaling(self, request, pk=None):
        service = self.get_object()
        payload = ScalingPolicySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        service = services.service_set_policy(service=service, actor=self._actor(), policy=payload.policy(service))
        return Response(ServiceSerializer(service).data)

    @extend_schema(
        summary="Stop every instance (billing stops; the service keeps its name)",
        request=None,
        responses={200: ServiceSerializer, 409: BEING_DELETED},
    )
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return Response(ServiceSerializer(services.service_stop(service=self.get_object(), actor=self._actor())).data)

    @extend_schema(
        summary="Start a stopped service again", request=None, responses={200: ServiceSerializer, 409: BEING_DELETED}
    )
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return Response(ServiceSerializer(services.service_start(service=self.get_object(), actor=self._actor())).data)
