from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TenancyConfig(AppConfig):
    """Organizations, members, keys and the audit trail.

    The label stays ``maas`` (the app's name before it had a folder of its own), so its tables, migrations and
    every foreign key to ``maas.Organization`` keep their names and no data migrates.
    """

    name = "tenancy"
    label = "maas"
    verbose_name = _("Tenancy")

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from tenancy.middleware import session_time_zone_load

        user_logged_in.connect(session_time_zone_load, dispatch_uid="tenancy-session-time-zone")
