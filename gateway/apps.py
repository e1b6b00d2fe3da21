from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from gateway.lookups import bump_auth_epoch, bump_serving_epoch
        from maas import signals

        signals.apikey_revoked.connect(bump_auth_epoch, dispatch_uid="gateway-drop-revoked-keys")
        signals.serving_changed.connect(bump_serving_epoch, dispatch_uid="gateway-refresh-serving")
