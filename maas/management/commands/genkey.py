from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print a new key for ENCRYPTION_KEYS (secrets at rest). Prepend it to rotate; keep old keys to decrypt."
    # manage.py runs it before settings load (they need ENCRYPTION_KEYS): nothing here may read settings.
    requires_system_checks: list[str] = []

    def handle(self, *args, **options):
        self.stdout.write(Fernet.generate_key().decode())
