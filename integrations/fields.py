"""Secrets at rest: a text field stored encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under rotating keys.

Keys come from FIELD_ENCRYPTION_KEYS (settings; comma-separated Fernet keys, the first encrypts, every one decrypts:
MultiFernet), so a key is rotated by putting a new one first, running `manage.py rotate_encryption_key` and then
dropping the old one. Stored values are `enc1:<Fernet token>`; a value without the prefix is a row written before
encryption (the migration encrypts those) and is read as it is. "" stays "" so blank checks keep working."""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "enc1:"


class DecryptionError(Exception):
    """A stored value that none of FIELD_ENCRYPTION_KEYS opens (a key was dropped before rotating, or a wrong key)."""


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("Set FIELD_ENCRYPTION_KEYS (docs/security.md says how to generate a key).")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)."
        ) from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return PREFIX + fernet().encrypt(value.encode()).decode("ascii")


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored  # written before encryption: the data migration encrypts it
    try:
        return fernet().decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
    except InvalidToken:
        raise DecryptionError(
            "an encrypted value could not be decrypted with FIELD_ENCRYPTION_KEYS: keep the key it was written with "
            "in the list until `manage.py rotate_encryption_key` has re-encrypted every row"
        ) from None


def rotate(stored: str) -> str:
    """The stored value re-encrypted under the first key (plaintext rows get encrypted)."""
    if not stored:
        return stored
    if not stored.startswith(PREFIX):
        return encrypt(stored)
    try:
        return PREFIX + fernet().rotate(stored[len(PREFIX) :].encode("ascii")).decode("ascii")
    except InvalidToken:
        raise DecryptionError("a stored value opens with none of FIELD_ENCRYPTION_KEYS: add its key first") from None


class EncryptedTextField(models.TextField):
    """A TextField whose value is encrypted in the database and plain in Python (not searchable, not orderable)."""

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value or value.startswith(PREFIX):
            return value
        return encrypt(value)
