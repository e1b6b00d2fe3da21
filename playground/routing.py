"""WebSocket routes of the playground (mounted by maas.asgi)."""

from django.urls import path

from playground.consumers import PlaygroundConsumer

websocket_urlpatterns = [path("ws/playground/", PlaygroundConsumer.as_asgi())]
