"""Management API for the catalog: read-only, public (the marketplace is public)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, serializers, viewsets

from catalog import selectors
from catalog.models import SLUG_PATTERN, Task
from catalog.serializers import CatalogModelDetailSerializer, CatalogModelSerializer
from core.api import validated_query


class MarketplaceQuerySerializer(serializers.Serializer):
    """The list's filters; an unknown choice or an overlong text is a 400."""

    q = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Search in names, publisher and descriptions"
    )
    task = serializers.ChoiceField(choices=Task.values, required=False, allow_blank=True, help_text="Task tag")
    publisher = serializers.CharField(required=False, allow_blank=True, max_length=100)
    size = serializers.ChoiceField(choices=list(selectors.SIZE_BUCKETS), required=False, allow_blank=True)
    sort = serializers.ChoiceField(choices=list(selectors.SORTS), required=False, allow_blank=True)


@extend_schema_view(
    list=extend_schema(
        summary="List marketplace models",
        parameters=[MarketplaceQuerySerializer],
    ),
    retrieve=extend_schema(
        summary="A marketplace model with its deployment variants",
        parameters=[
            OpenApiParameter(
                "slug",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="The model's slug, dots included",
                examples=[OpenApiExample("Qwen2.5 7B Instruct", value="qwen2.5-7b-instruct")],
            )
        ],
    ),
)
class CatalogModelViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [permissions.AllowAny]
    lookup_field = "slug"
    lookup_value_regex = SLUG_PATTERN

    def get_queryset(self):
        if self.action == "retrieve":
            return selectors.listed_models().prefetch_related("variants")
        params = validated_query(self.request, MarketplaceQuerySerializer)
        return selectors.marketplace_models(selectors.MarketplaceQuery.from_params(params))

    def get_serializer_class(self):
        return CatalogModelDetailSerializer if self.action == "retrieve" else CatalogModelSerializer
