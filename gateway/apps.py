from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from gateway.lookups import bump_auth_epoch
        from maas import signals

        signals.apikey_revoked.connect(bump_auth_epoch, dispatch_uid="gateway-drop-revoked-keys")
