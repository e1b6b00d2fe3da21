from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from maas.models import Membership, Organization, Role
from maas.services import org_create, user_signup

ADMIN_EMAIL = "admin@example.com"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "maas-demo-2026"


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
            email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo User")
        org = Organization.objects.filter(namespace="demo").first() or org_create(
            owner=demo, name="Demo Organization", namespace="demo")
        Membership.objects.get_or_create(org=org, user=admin, defaults={"role": Role.ADMIN})
        self.stdout.write(self.style.SUCCESS(
            f"demo data ready: admin {ADMIN_EMAIL} / user {DEMO_EMAIL} (password {DEMO_PASSWORD}), org 'demo'"))
