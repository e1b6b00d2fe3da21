from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MaasConfig(AppConfig):
    name = "maas"
    verbose_name = _("Tenancy")
