from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = _("Model marketplace")

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from catalog.models import CatalogModel
        from core.signals import serving_changed_on_commit

        post_save.connect(serving_changed_on_commit, sender=CatalogModel, dispatch_uid="serving-save-CatalogModel")
        post_delete.connect(serving_changed_on_commit, sender=CatalogModel, dispatch_uid="serving-delete-CatalogModel")
