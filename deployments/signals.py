"""Signals the deployments app sends to the layers above it, which it may not import.

``subscription_cover_requested`` is sent synchronously, inside the transaction of ``service_create`` and
``service_scale``, with ``service``, ``instances`` and ``actor``: billing (connected in ``BillingConfig.ready``)
makes the service's subscription cover that many instances, or raises ``ApplicationError`` so that the whole deploy
or scale rolls back. A subscription-mode service is never deployed for free: with no receiver connected the
deployments service refuses it (``deployments.services.subscription_cover``).
"""

from django.dispatch import Signal

subscription_cover_requested = Signal()
