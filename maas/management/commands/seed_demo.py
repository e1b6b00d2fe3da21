from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from billing.models import EntryKind
from billing.services import ledger_post
from billing.texts import LEDGER
from tenancy.models import Membership, Organization, Role
from tenancy.services import membership_choose, org_create, user_signup

ADMIN_EMAIL = "admin@example.com"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "maas-demo-2026"
DEMO_CREDIT = Decimal("100.00")


class Command(BaseCommand):
    help = "Create demo data (idempotent): a platform admin, a demo user and a demo organization."

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        admin = User.objects.filter(username=ADMIN_EMAIL).first()
        if admin is None:
            admin = user_signup(email=ADMIN_EMAIL, password=DEMO_PASSWORD, name="Platform Admin")
        admin.is_staff = admin.is_superuser = True
        admin.save(update_fields=["is_staff", "is_superuser"])
        demo = User.objects.filter(username=DEMO_EMAIL).first() or user_signup(
            email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo User"
        )
        org = Organization.objects.filter(namespace="demo").first() or org_create(
            owner=demo, name="Demo Organization", namespace="demo"
        )
        Membership.objects.get_or_create(org=org, user=admin, defaults={"role": Role.ADMIN})
        if not demo.memberships.filter(chosen_at__isnull=False).exists():
            # The README's demo starts in the demo organization; a later choice of the user's own is kept.
            membership_choose(user=demo, org_id=org.pk)
        # A demo credit so a newcomer can call paid public models and deploy at once (idempotent by its key).
        for demo_org in (org, demo.memberships.get(org__personal=True).org):
            ledger_post(
                org=demo_org,
                kind=EntryKind.ADJUSTMENT,
                amount=DEMO_CREDIT,
                key=f"demo-credit:{demo_org.pk}",
                description=LEDGER("demo_credit"),
                actor=admin,
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"demo data ready: admin {ADMIN_EMAIL} / user {DEMO_EMAIL} (password {DEMO_PASSWORD}), org 'demo' "
                f"with a {DEMO_CREDIT} {settings.CURRENCY} demo credit"
            )
        )
