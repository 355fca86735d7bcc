"""rotate_encryption_key: re-encrypt every secret at rest under the first FIELD_ENCRYPTION_KEYS key."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from integrations.fields import DecryptionError, rotate

# (table, primary key, encrypted columns): every EncryptedTextField in the project.
ENCRYPTED = [("integrations_integration", "id", ("endpoint", "secret", "previous_secret"))]


class Command(BaseCommand):
    help = (
        "Re-encrypt the stored secrets (integration endpoints, signing secrets) under the first key of "
        "FIELD_ENCRYPTION_KEYS. Rotation: put the new key first (keep the old one after it), run this, then drop "
        "the old key. --new-key prints a freshly generated key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--new-key", action="store_true", help="print a new Fernet key and exit (nothing changes)")

    def handle(self, *args, **options):
        if options["new_key"]:
            from cryptography.fernet import Fernet

            self.stdout.write(Fernet.generate_key().decode())
            return
        rows = 0
        try:
            with transaction.atomic():
                for table, pk, columns in ENCRYPTED:
                    rows += _rotate_table(table, pk, columns)
        except DecryptionError as exc:
            raise CommandError(f"nothing changed: {exc}") from None
        self.stdout.write(f"{rows} rows re-encrypted under the first FIELD_ENCRYPTION_KEYS key.")


def _rotate_table(table: str, pk: str, columns: tuple[str, ...]) -> int:
    """Raw SQL on the stored values (rotate() keeps the token's timestamp; plaintext leftovers get encrypted)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pk}, {', '.join(columns)} FROM {table} ORDER BY {pk} FOR UPDATE")
        found = cursor.fetchall()
        for key, *values in found:
            cursor.execute(
                f"UPDATE {table} SET {', '.join(f'{c} = %s' for c in columns)} WHERE {pk} = %s",
                [*(rotate(v) if v else v for v in values), key],
            )
    return len(found)
