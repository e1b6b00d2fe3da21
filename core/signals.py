"""Platform signals: how a lower app tells a higher one (the gateway) that something changed, without importing it.

The shell (``maas.apps``) connects the gateway's receivers; lower apps only send.
"""

from django.db import transaction
from django.dispatch import Signal

# Sent after commit with ``key_hash`` when an API key is revoked.
apikey_revoked = Signal()

# Sent by billing (after commit) with ``org_id`` and ``available`` (balance + credit limit, a Decimal) whenever an
# org's ledger changes; the gateway publishes it to the Redis key its reservations read.
balance_changed = Signal()

# Sent after commit when what the /v1 gateway resolves may have changed: services, their replicas and clusters,
# catalog models and prices. Deployments and catalog send it; the gateway refreshes its caches.
serving_changed = Signal()


def _send_serving_changed() -> None:
    serving_changed.send(sender=None)


def serving_changed_on_commit(**_kwargs: object) -> None:
    """A post_save / post_delete receiver: ``serving_changed`` once, when the current transaction commits."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(item[1] is _send_serving_changed for item in connection.run_on_commit):
        return  # already queued by an earlier write of this transaction
    transaction.on_commit(_send_serving_changed)
