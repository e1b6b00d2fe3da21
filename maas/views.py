"""The shell's own pages: the API's root and reference (Redoc, served from this platform), and the favicon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from csp.decorators import csp_update
from django.conf import settings
from django.http import FileResponse, HttpRequest
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

FAVICON = Path(settings.BASE_DIR) / "static" / "favicon.svg"
# The management API's sections (maas/api_urls.py registers their viewsets): name -> the route of their list.
API_SECTIONS = {
    "catalog_models": "catalog-model-list",
    "services": "service-list",
    "billing_ledger": "billing-ledger-list",
    "billing_topups": "billing-topup-list",
}

# Redoc styles its page with styled-components, which writes <style> elements at run time, and runs its search
# index in a Web Worker made from a blob: URL. Only this page is widened for that; its script stays 'self' (Redoc's
# bundle comes from drf-spectacular-sidecar's static files), so it loads nothing from another host.
REDOC_CSP = {"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]}


@method_decorator(csp_update(REDOC_CSP), name="dispatch")  # type: ignore[arg-type]  # django-csp types a view as (request) only
class ApiDocsView(SpectacularRedocView):
    """The management API's reference: Redoc on the schema at ``/api/schema/``, no CDN, no inline script."""

    template_name = "api/redoc.html"


class ApiRootSerializer(serializers.Serializer):
    sections = serializers.DictField(child=serializers.URLField(), help_text="Each section's list, by name")
    schema = serializers.URLField(help_text="This API's OpenAPI document")
    docs = serializers.URLField(help_text="This API's reference (Redoc)")
    v1 = serializers.URLField(help_text="The OpenAI-compatible data plane's base URL")
    v1_schema = serializers.URLField(help_text="The data plane's OpenAPI document")


class ApiRootView(APIView):
    """``/api/``: where the management API's sections, schema and reference are (open to all, as the schema is)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(summary="The API's sections and documents", responses=ApiRootSerializer)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        def url(name: str) -> str:
            return request.build_absolute_uri(reverse(name))

        return Response(
            {
                "sections": {section: url(name) for section, name in API_SECTIONS.items()},
                "schema": url("api-schema"),
                "docs": url("api-docs"),
                "v1": request.build_absolute_uri("/v1/"),
                "v1_schema": url("v1-schema"),
            }
        )


@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> FileResponse:
    """``/favicon.ico``, asked for by browsers and tools whatever a page links: the console's icon (an SVG)."""
    return FileResponse(FAVICON.open("rb"), content_type="image/svg+xml")
