"""Signals the catalog sends to the layers above it, which it may not import.

``public_api_requested`` is sent synchronously by the marketplace pages with ``slugs`` (the catalog models shown):
the deployments app (connected in ``DeploymentsConfig.ready``) answers ``{slug: PublicApi}`` for the models whose
public services exist. A slug no receiver names has no public API (``PublicApi.NOT_OFFERED``), so with no receiver
connected the marketplace promises nothing.
"""

from django.dispatch import Signal

public_api_requested = Signal()
