"""ASGI entry point: HTTP (console, /api, /v1) and WebSockets (playground)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

import playground.routing  # noqa: E402  (imports models: only after the app registry is ready)
from gateway.asgi import gateway_asgi  # noqa: E402  (/v1 is served by a raw ASGI handler in front of Django)

application = gateway_asgi(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(playground.routing.websocket_urlpatterns))
            ),
        }
    )
)
