"""Integration.endpoint, secret and previous_secret encrypted at rest (integrations/fields.py); existing rows are
encrypted here under the first FIELD_ENCRYPTION_KEYS key, and decrypted back on the way down."""

from django.db import migrations

import integrations.fields

FIELDS = ("endpoint", "secret", "previous_secret")


def encrypt_rows(apps, schema_editor):
    from integrations.fields import rotate

    _rewrite(schema_editor, rotate)


def decrypt_rows(apps, schema_editor):
    from integrations.fields import decrypt

    _rewrite(schema_editor, decrypt)


def _rewrite(schema_editor, convert):
    """Raw SQL on the stored text: the historical model would decrypt on read and encrypt on write by itself."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {', '.join(FIELDS)} FROM integrations_integration FOR UPDATE")
        for pk, *values in cursor.fetchall():
            converted = [convert(v) if v else v for v in values]
            if converted != values:
                cursor.execute(
                    f"UPDATE integrations_integration SET {', '.join(f'{f} = %s' for f in FIELDS)} WHERE id = %s",
                    [*converted, pk],
                )


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0006_integration_bootstrap_applied"),
    ]

    operations = [
        migrations.AlterField(
            model_name="integration",
            name="endpoint",
            field=integrations.fields.EncryptedTextField(
                help_text="Bitrix24 inbound webhook URL or n8n webhook URL (secret)."
            ),
        ),
        migrations.AlterField(
            model_name="integration",
            name="previous_secret",
            field=integrations.fields.EncryptedTextField(blank=True, default=""),
        ),
        migrations.AlterField(
            model_name="integration",
            name="secret",
            field=integrations.fields.EncryptedTextField(
                blank=True, default="", help_text="Signing secret whsec_… (n8n)."
            ),
        ),
        migrations.RunPython(encrypt_rows, decrypt_rows),
    ]
