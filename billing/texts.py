"""The descriptions of ledger entries the platform posts, translated when shown (see ``core.i18n``).

An administrator's adjustment keeps the reason as typed; every other entry is described by a code of ``LEDGER``.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from core.i18n import Texts

LEDGER = Texts(
    {
        "token_usage": ngettext_lazy("Token usage: %(n)d request", "Token usage: %(n)d requests", "n"),
        "instance_time": _("Instance time of %(service)s"),
        # Instances a subscription-mode service runs above its prepaid floor (autoscaled up), billed per second.
        "instance_time_above_subscription": ngettext_lazy(
            "Instance time above the subscription's %(n)d instance of %(service)s",
            "Instance time above the subscription's %(n)d instances of %(service)s",
            "n",
        ),
        "subscription": ngettext_lazy(
            "Subscription of %(service)s: %(n)d instance for a month",
            "Subscription of %(service)s: %(n)d instances for a month",
            "n",
        ),
        "subscription_addition": ngettext_lazy(
            "%(n)d more instance of %(service)s until %(end)s (prorated)",
            "%(n)d more instances of %(service)s until %(end)s (prorated)",
            "n",
        ),
        "subscription_renewal": ngettext_lazy(
            "Renewal of %(service)s: %(n)d instance for a month",
            "Renewal of %(service)s: %(n)d instances for a month",
            "n",
        ),
        "card_topup": _("Top-up by card"),
        "card_refund": _("Refund of a card top-up"),
        "demo_credit": _("Demo credit"),
    }
)
