from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.services import catalog_sync
from catalog.specs import SpecError


class Command(BaseCommand):
    help = "Load the ModelHub-format model specs into the marketplace (idempotent, all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--specs-dir", type=Path, default=None, help="Folder of *.yaml specs (default: catalog/specs)"
        )

    def handle(self, *args, specs_dir=None, **options):
        try:
            result = catalog_sync(specs_dir=specs_dir)
        except SpecError as exc:
            raise CommandError("catalog not synced, nothing changed:\n" + "\n".join(exc.errors)) from None
        self.stdout.write(self.style.SUCCESS(f"catalog synced: {result.summary()}"))
