"""Management API for the catalog: read-only, public (the marketplace is public)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, serializers, viewsets

from catalog import selectors
from catalog.models import Task
from catalog.serializers import CatalogModelDetailSerializer, CatalogModelSerializer
from core.api import validated_query


class MarketplaceQuerySerializer(serializers.Serializer):
    """The list's filters; an unknown choice or an overlong text is a 400."""

    q = serializers.CharField(required=False, allow_blank=True, max_length=100)
    task = serializers.ChoiceField(choices=Task.values, required=False, allow_blank=True)
    publisher = serializers.CharField(required=False, allow_blank=True, max_length=100)
    size = serializers.ChoiceField(choices=list(selectors.SIZE_BUCKETS), required=False, allow_blank=True)
    sort = serializers.ChoiceField(choices=list(selectors.SORTS), required=False, allow_blank=True)


@extend_schema_view(
    list=extend_schema(
        summary="List marketplace models",
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, description="Search in names, publisher and descriptions"),
            OpenApiParameter("task", OpenApiTypes.STR, description="Task tag, e.g. text-generation, embedding"),
            OpenApiParameter("publisher", OpenApiTypes.STR),
            OpenApiParameter("size", OpenApiTypes.STR, enum=list(selectors.SIZE_BUCKETS)),
            OpenApiParameter("sort", OpenApiTypes.STR, enum=list(selectors.SORTS)),
        ],
    ),
    retrieve=extend_schema(summary="A marketplace model with its deployment variants"),
)
class CatalogModelViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [permissions.AllowAny]
    lookup_field = "slug"
    lookup_value_regex = r"[a-z0-9][a-z0-9._-]*"

    def get_queryset(self):
        if self.action == "retrieve":
            return selectors.listed_models().prefetch_related("variants")
        params = validated_query(self.request, MarketplaceQuerySerializer)
        return selectors.marketplace_models(selectors.MarketplaceQuery.from_params(params))

    def get_serializer_class(self):
        return CatalogModelDetailSerializer if self.action == "retrieve" else CatalogModelSerializer
