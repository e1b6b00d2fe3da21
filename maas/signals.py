"""Platform signals other apps listen to (e.g. the gateway drops cached keys on revocation)."""
from django.dispatch import Signal

# Sent after commit with ``key_hash`` when an API key is revoked.
apikey_revoked = Signal()
