"""Secrets at rest: Integration.endpoint, secret and previous_secret are stored as Fernet tokens under rotating keys
(integrations/fields.py), migrated from plaintext, re-encrypted by `rotate_encryption_key`; reading stays plain."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from integrations import fields
from integrations.clients.n8n import generate_secret
from integrations.models import Integration, IntegrationKind

BITRIX_URL = "https://portal.example.com/rest/1/k3y9code77x/"
N8N_URL = "https://n8n.example.com/webhook/0b7e-secret-path"


def stored(pk: int) -> tuple[str, str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT endpoint, secret, previous_secret FROM integrations_integration WHERE id = %s", [pk])
        return cursor.fetchone()


@pytest.mark.django_db
def test_endpoint_and_secrets_are_ciphertext_in_the_database_and_plain_in_python():
    secret, previous = generate_secret(), generate_secret()
    n8n = Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n", endpoint=N8N_URL, secret=secret, previous_secret=previous
    )
    bitrix = Integration.objects.create(kind=IntegrationKind.BITRIX24, name="bx", endpoint=BITRIX_URL)

    raw = stored(n8n.pk) + stored(bitrix.pk)
    assert all(value.startswith(fields.PREFIX) for value in raw if value)
    for plain in (N8N_URL, secret, previous, BITRIX_URL, "0b7e-secret-path", "k3y9code77x", secret[6:]):
        assert all(plain not in value for value in raw)
    assert stored(bitrix.pk)[1] == ""  # blank stays blank
    again = Integration.objects.get(pk=n8n.pk)
    assert (again.endpoint, again.secret, again.previous_secret) == (N8N_URL, secret, previous)


@pytest.mark.django_db
def test_queryset_update_encrypts_too():
    integration = Integration.objects.create(kind=IntegrationKind.N8N, name="n8n", endpoint=N8N_URL)
    Integration.objects.filter(pk=integration.pk).update(endpoint="https://other.example.com/webhook/zz-new-path")

    assert "zz-new-path" not in stored(integration.pk)[0]
    assert Integration.objects.get(pk=integration.pk).endpoint.endswith("/zz-new-path")


@pytest.mark.django_db
def test_rotation_re_encrypts_under_the_new_key_and_the_old_key_can_then_go(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    secret = generate_secret()
    integration = Integration.objects.create(kind=IntegrationKind.N8N, name="n8n", endpoint=N8N_URL, secret=secret)
    before = stored(integration.pk)

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_key", stdout=io.StringIO())
    settings.FIELD_ENCRYPTION_KEYS = [new]

    after = stored(integration.pk)
    assert after[0] != before[0] and after[1] != before[1]
    again = Integration.objects.get(pk=integration.pk)
    assert (again.endpoint, again.secret) == (N8N_URL, secret)


@pytest.mark.django_db
def test_a_dropped_key_is_a_clear_error_and_rotation_without_it_changes_nothing(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    integration = Integration.objects.create(kind=IntegrationKind.N8N, name="n8n", endpoint=N8N_URL)
    before = stored(integration.pk)
    settings.FIELD_ENCRYPTION_KEYS = [new]

    with pytest.raises(fields.DecryptionError, match="FIELD_ENCRYPTION_KEYS"):
        Integration.objects.get(pk=integration.pk)
    with pytest.raises(CommandError, match="nothing changed"):
        call_command("rotate_encryption_key")
    assert stored(integration.pk) == before


def test_a_key_that_is_not_a_fernet_key_is_a_configuration_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="not a Fernet key"):
        fields.encrypt("x")


def test_new_key_prints_a_usable_key(capsys):
    call_command("rotate_encryption_key", "--new-key")
    Fernet(capsys.readouterr().out.strip().encode())


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_plaintext_rows_and_decrypts_them_on_the_way_back():
    before, after = (
        [("integrations", "0006_integration_bootstrap_applied")],
        [("integrations", "0007_encrypt_integration_secrets")],
    )
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO integrations_integration (kind, name, enabled, endpoint, secret, previous_secret, "
                "event_filter, rate_limit, disabled_reason, consecutive_failures, bootstrap_applied, created_at, "
                "updated_at) VALUES ('n8n', 'legacy', true, %s, 'whsec_legacyplainsecret', '', '[]', '', '', 0, '{}', "
                "now(), now()) "
                "RETURNING id",
                [N8N_URL],
            )
            pk = cursor.fetchone()[0]
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        assert all(v.startswith(fields.PREFIX) for v in stored(pk)[:2]) and stored(pk)[2] == ""
        legacy = Integration.objects.get(pk=pk)
        assert (legacy.endpoint, legacy.secret) == (N8N_URL, "whsec_legacyplainsecret")

        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert stored(pk)[:2] == (N8N_URL, "whsec_legacyplainsecret")
    finally:
        MigrationExecutor(connection).migrate(leaves)
        Integration.objects.all().delete()
