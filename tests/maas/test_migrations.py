"""Existing databases migrate forward cleanly, and the models have no changes without a migration.

A database created before the rooms were redrawn (main at 5e2b19c) holds the same tables under the same app labels
(the tenancy app kept "maas", the metering app kept "gateway"); this migrates the test database back to that
state, writes rows with the models of that time, migrates forward and reads them through today's models.
"""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from billing.models import LedgerEntry, TopUp
from core.crypto import decrypt
from deployments.models import Service
from metering.models import UsageRecord
from tenancy.models import Organization

# The leaf migration of every app at 5e2b19c (`git ls-tree -r 5e2b19c --name-only | grep migrations/0`).
BEFORE_THE_RESTRUCTURE = [
    ("maas", "0001_initial"),
    ("catalog", "0001_initial"),
    ("deployments", "0002_gpu_prices_and_reconcile_claims"),
    ("gateway", "0002_usage_cost"),
    ("playground", "0001_initial"),
    ("billing", "0001_initial"),
]


def _migrate(targets=None) -> MigrationExecutor:
    """Migrate the test database to ``targets`` (every app's latest migration when None), with a fresh graph."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets or executor.loader.graph.leaf_nodes())
    return MigrationExecutor(connection)


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_restructure_migrates_forward_with_its_rows():
    try:
        executor = _migrate(BEFORE_THE_RESTRUCTURE)
        old = executor.loader.project_state(BEFORE_THE_RESTRUCTURE).apps
        org = old.get_model("maas", "Organization").objects.create(name="Old Co", namespace="old-co")
        now = timezone.now()
        usage = old.get_model("gateway", "UsageRecord").objects.create(
            org_id=org.pk,
            endpoint="chat.completions",
            model_id="public/qwen2.5-7b-instruct",
            public=True,
            prompt_tokens=1000,
            completion_tokens=500,
            status="ok",
            cost=Decimal("0.001200"),
            currency="CNY",
            started_at=now,
            finished_at=now,
        )
        account = old.get_model("billing", "BillingAccount").objects.create(
            org_id=org.pk, currency="CNY", balance=Decimal("100")
        )
        entry = old.get_model("billing", "LedgerEntry").objects.create(
            org_id=org.pk,
            account_id=account.pk,
            kind="topup",
            amount=Decimal("100"),
            balance_after=Decimal("100"),
            currency="CNY",
            key="topup:old-co:1",
        )

        model = old.get_model("catalog", "CatalogModel").objects.create(
            slug="old-chat",
            name="old-chat",
            display_name="old-chat",
            publisher="test",
            description_zh="测试",
            description_en="test",
            tasks=["chat"],
            parameters_b=Decimal("0.5"),
            context_length=8192,
            quantization="bf16",
            license="apache-2.0",
            source_hub="huggingface",
            source_repo="test/old-chat",
            currency="CNY",
            input_price_per_1k=Decimal("0.002"),
            output_price_per_1k=Decimal("0.006"),
            spec_updated=now.date(),
            spec_file="old-chat.yaml",
            spec_hash="0" * 64,
        )
        region = old.get_model("deployments", "Region").objects.create(code="cn-old-1", name_zh="旧区", name_en="Old 1")
        service = old.get_model("deployments", "Service").objects.create(
            org_id=org.pk,
            name="chat",
            catalog_model_id=model.pk,
            region_id=region.pk,
            variant_position=0,
            runtime="vllm",
            runtime_version="0.10.2",
            image="vllm/vllm-openai:v0.10.2",
            gpu_product="NVIDIA-H100",
            gpu_count=1,
            per_gpu_memory_gb=80,
            cpu=8,
            memory_gb=64,
            max_model_len=8192,
            replicas=3,  # the desired count was called replicas then
            ready_replicas=2,
            hourly_price=Decimal("12.50"),
            currency="CNY",
            status="Running",
        )

        _migrate()

        assert Organization.objects.get(pk=org.pk).namespace == "old-co"
        record = UsageRecord.objects.get(pk=usage.pk)
        assert (record.org_id, record.prompt_tokens, record.cost) == (org.pk, 1000, Decimal("0.001200"))
        ledger = LedgerEntry.objects.get(pk=entry.pk)
        assert (ledger.org_id, ledger.amount, ledger.key) == (org.pk, Decimal("100"), "topup:old-co:1")
        moved = Service.objects.get(pk=service.pk)
        assert (moved.instances, moved.ready_instances, moved.catalog_model_id) == (3, 2, model.pk)
    finally:
        _migrate()


@pytest.mark.django_db
def test_models_have_no_changes_without_a_migration():
    call_command("makemigrations", check=True, dry_run=True, verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_plaintext_client_secrets_are_encrypted_or_dropped_by_the_migration():
    before = [("billing", "0001_initial")]
    try:
        executor = _migrate(before)
        old = executor.loader.project_state(before).apps
        org = old.get_model("maas", "Organization").objects.create(name="Pay Co", namespace="pay-co")
        rows = {
            status: old.get_model("billing", "TopUp").objects.create(
                org_id=org.pk,
                amount=Decimal("10"),
                currency="CNY",
                payment_intent_id=f"pi_{status}",
                client_secret=f"pi_{status}_secret_plain{status}",
                status=status,
            )
            for status in ("pending", "failed", "succeeded")
        }

        _migrate()

        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM billing_topup WHERE org_id = %s", [org.pk])
            stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
        assert "_secret_plain" not in stored
        migrated = {status: TopUp.objects.get(pk=row.pk) for status, row in rows.items()}
        assert decrypt(migrated["pending"].client_secret_encrypted) == "pi_pending_secret_plainpending"
        assert decrypt(migrated["failed"].client_secret_encrypted) == "pi_failed_secret_plainfailed"
        assert migrated["succeeded"].client_secret_encrypted == ""

        back = _migrate(before).loader.project_state(before).apps
        assert back.get_model("billing", "TopUp").objects.get(pk=rows["pending"].pk).client_secret == (
            "pi_pending_secret_plainpending"
        )
    finally:
        _migrate()
