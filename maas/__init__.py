"""The project shell: settings, URLs, ASGI, Celery and the commands that start the whole platform.

Importing this package has no side effects: ``maas.celery`` (which defaults ``DJANGO_SETTINGS_MODULE`` like the
other entry points, ``manage.py`` and ``maas.asgi``) is found by ``celery -A maas`` and imported by the shell app's
``ready`` in every Django process, so that shared tasks bind to it.
"""
