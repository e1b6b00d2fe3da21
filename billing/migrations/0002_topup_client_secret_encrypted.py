"""Top-ups keep the PaymentIntent client secret encrypted, and only while they can still be paid.

Existing rows: the plaintext secret of a pending or failed top-up is encrypted with ENCRYPTION_KEYS; that of a paid or
refunded one is dropped (no page needs it). Backwards, the encrypted secrets are decrypted into the old column.
"""

from django.db import migrations, models

from core.crypto import decrypt, encrypt

PAYABLE = ("pending", "failed")


def encrypt_client_secrets(apps, schema_editor):
    TopUp = apps.get_model("billing", "TopUp")
    for topup in TopUp.objects.exclude(client_secret="").only("pk", "status", "client_secret").iterator():
        encrypted = encrypt(topup.client_secret) if topup.status in PAYABLE else ""
        TopUp.objects.filter(pk=topup.pk).update(client_secret_encrypted=encrypted)


def decrypt_client_secrets(apps, schema_editor):
    TopUp = apps.get_model("billing", "TopUp")
    for topup in TopUp.objects.exclude(client_secret_encrypted="").only("pk", "client_secret_encrypted").iterator():
        TopUp.objects.filter(pk=topup.pk).update(client_secret=decrypt(topup.client_secret_encrypted))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="topup",
            name="client_secret_encrypted",
            field=models.TextField(blank=True),
        ),
        migrations.RunPython(encrypt_client_secrets, decrypt_client_secrets, elidable=False),
        migrations.RemoveField(
            model_name="topup",
            name="client_secret",
        ),
    ]
