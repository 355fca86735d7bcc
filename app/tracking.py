"""Remember the field values a model instance was loaded with, so a save can tell what changed."""

from typing import Any

from django.db import models


class TracksChanges(models.Model):
    """Mixin: `changes()` returns {field: [old, new]} for TRACKED_FIELDS since load (or since the last save)."""

    TRACKED_FIELDS: tuple[str, ...] = ()

    class Meta:
        abstract = True

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded_values = {f: instance.__dict__.get(f) for f in cls.TRACKED_FIELDS}
        return instance

    def changes(self) -> dict[str, list[Any]]:
        loaded = getattr(self, "_loaded_values", None)
        if loaded is None:
            return {}
        return {
            f: [_plain(loaded.get(f)), _plain(getattr(self, f))]
            for f in self.TRACKED_FIELDS
            if loaded.get(f) != getattr(self, f)
        }

    def mark_saved(self) -> None:
        self._loaded_values = {f: getattr(self, f) for f in self.TRACKED_FIELDS}


def _plain(value: Any) -> Any:
    """JSON-friendly form of a field value (Decimal → str)."""
    from decimal import Decimal

    return str(value) if isinstance(value, Decimal) else value
