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
