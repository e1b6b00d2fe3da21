"""The shell's own pages: the API reference (Redoc, served from this platform)."""

from __future__ import annotations

from csp.decorators import csp_update
from django.utils.decorators import method_decorator
from drf_spectacular.views import SpectacularRedocView

# Redoc styles its page with styled-components, which writes <style> elements at run time, and runs its search
# index in a Web Worker made from a blob: URL. Only this page is widened for that; its script stays 'self' (Redoc's
# bundle comes from drf-spectacular-sidecar's static files), so it loads nothing from another host.
REDOC_CSP = {"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]}


@method_decorator(csp_update(REDOC_CSP), name="dispatch")  # type: ignore[arg-type]  # django-csp types a view as (request) only
class ApiDocsView(SpectacularRedocView):
    """The management API's reference: Redoc on the schema at ``/api/schema/``, no CDN, no inline script."""

    template_name = "api/redoc.html"
