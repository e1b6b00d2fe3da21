"""Signals the deployments app sends to the layers above it, which it may not import.

``subscription_cover_requested`` is sent synchronously, inside the transaction of ``service_create`` and
``service_scale``, with ``service``, ``instances`` and ``actor``: billing (connected in ``BillingConfig.ready``)
makes the service's subscription cover that many instances, or raises ``ApplicationError`` so that the whole deploy
or scale rolls back. A subscription-mode service is never deployed for free: with no receiver connected the
deployments service refuses it (``deployments.services.subscription_cover``).

``charge_quote_requested`` is sent by the deploy and scale pages with ``org``, ``region``, ``gpu_product``,
``gpu_count``, ``instances``, ``billing_mode`` and ``service`` (None for a new deploy): billing answers with a
``billing.selectors.ChargeQuote``, so that the price shown is the one billing will charge. With no receiver
connected the pages show no price.
"""

from django.dispatch import Signal

subscription_cover_requested = Signal()
charge_quote_requested = Signal()
