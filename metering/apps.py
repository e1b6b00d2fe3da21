from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MeteringConfig(AppConfig):
    """Usage records: their table, ingestion from the gateway's Redis stream, usage statistics and pages.

    The label stays ``gateway`` (where ``UsageRecord`` lived before), so the table ``gateway_usagerecord`` and its
    migrations keep their names and no data migrates; ``gateway/`` is now a plain package with no models.
    """

    name = "metering"
    label = "gateway"
    verbose_name = _("Metering")
    default_auto_field = "django.db.models.BigAutoField"
