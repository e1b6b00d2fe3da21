"""The Celery app, an entry point (``celery -A maas``): tasks are thin wrappers over services (see tasks.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")

app = Celery("maas")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
