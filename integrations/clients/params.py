"""Encode nested parameters the way PHP's http_build_query does (Bitrix bracket form: fields[EMAIL][0][VALUE]=x)."""

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested dicts/lists into (bracket key, string value) pairs; None and empty containers are dropped."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        pairs.extend(_flatten_value(name, value))
    return pairs


def _flatten_value(name: str, value: Any) -> Iterable[tuple[str, str]]:
    if value is None:
        return []  # PHP skips nulls, so the server would never see the key either
    if isinstance(value, Mapping):
        return flatten_params(value, name)
    if isinstance(value, list | tuple):
        return flatten_params({str(i): item for i, item in enumerate(value)}, name)
    if isinstance(value, bool):
        return [(name, "1" if value else "0")]  # http_build_query semantics; pass "Y"/"N" explicitly for Bitrix flags
    return [(name, str(value))]


def encode_params(params: Mapping[str, Any] | None) -> str:
    """Return the urlencoded bracket form, e.g. for a batch command `crm.deal.get?` + encode_params({...})."""
    return urlencode(flatten_params(params or {}))
