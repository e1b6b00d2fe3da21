from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = _("Deployments")

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from catalog.signals import public_api_requested
        from core.signals import serving_changed_on_commit
        from deployments.models import Cluster, Replica, Service
        from deployments.selectors import public_api_status

        public_api_requested.connect(public_api_status, dispatch_uid="deployments-public-api-status")

        for model in (Service, Replica, Cluster):
            post_save.connect(serving_changed_on_commit, sender=model, dispatch_uid=f"serving-save-{model.__name__}")
            post_delete.connect(
                serving_changed_on_commit, sender=model, dispatch_uid=f"serving-delete-{model.__name__}"
            )
