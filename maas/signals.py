"""Platform signals other apps listen to (e.g. the gateway drops cached keys on revocation)."""

from django.db import transaction
from django.dispatch import Signal

# Sent after commit with ``key_hash`` when an API key is revoked.
apikey_revoked = Signal()

# Sent after commit when what the /v1 gateway resolves may have changed: services, their replicas and clusters,
# catalog models and prices. Deployments and catalog send it; the gateway refreshes its caches.
serving_changed = Signal()


def _send_serving_changed() -> None:
    serving_changed.send(sender=None)


def serving_changed_on_commit(**_kwargs) -> None:
    """A post_save / post_delete receiver: ``serving_changed`` once, when the current transaction commits."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(item[1] is _send_serving_changed for item in connection.run_on_commit):
        return  # already queued by an earlier write of this transaction
    transaction.on_commit(_send_serving_changed)
