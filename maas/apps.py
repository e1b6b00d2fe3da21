from django.apps import AppConfig


class ShellConfig(AppConfig):
    """The project shell: settings, URLs, ASGI and Celery, and the commands that start the whole platform.

    It has no models. Its label is ``shell`` because ``maas`` is the tenancy app's historical label. Its ``ready``
    wires the gateway (a plain package, not an app) to the signals of the apps below it.
    """

    name = "maas"
    label = "shell"

    def ready(self) -> None:
        import maas.celery  # noqa: F401  (the Celery app: shared tasks sent from this process use its broker)
        from core import signals
        from gateway.lookups import bump_auth_epoch, bump_serving_epoch

        signals.apikey_revoked.connect(bump_auth_epoch, dispatch_uid="gateway-drop-revoked-keys")
        signals.serving_changed.connect(bump_serving_epoch, dispatch_uid="gateway-refresh-serving")
        signals.balance_changed.connect(_publish_balance, dispatch_uid="gateway-publish-balance")


def _publish_balance(*, org_id, available, **_kwargs) -> None:
    from gateway.admission import publish_balance

    publish_balance(org_id, available)
