"""Create or refresh the env-configured integrations (BITRIX_*, N8N_*) so a deploy needs no admin clicks.

The env values are validated first (nothing is written when one is wrong). On an existing integration a field takes the
env value only when the env changed it since the last bootstrap; a field changed elsewhere since (an operator in the
admin, a 410 that disabled the integration) is kept and reported, unless `overwrite` is asked for. Enabling an
integration again this way does what the admin does (integrations.missed.integration_reenabled)."""

import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from integrations import config
from integrations.clients.n8n import generate_secret
from integrations.missed import integration_reenabled
from integrations.models import Integration, IntegrationKind

BITRIX_NAME = "bitrix24"
N8N_NAME = "n8n-default"


@dataclass
class Wanted:
    """One env-configured integration: its name, kind and {field: (env variable, value)}."""

    name: str
    kind: str
    fields: dict[str, tuple[str, object]]


class BootstrapError(ValueError):
    """An env value that delivery could not use; the message names the variable, never a secret's value."""


def wanted_from_env() -> list[Wanted]:
    wanted = []
    if settings.BITRIX_WEBHOOK_URL:
        fields = {
            "endpoint": ("BITRIX_WEBHOOK_URL", settings.BITRIX_WEBHOOK_URL),
            "rate_limit": ("BITRIX_RATE_LIMIT", settings.BITRIX_RATE_LIMIT),
            "enabled": ("BITRIX_ENABLED", settings.BITRIX_ENABLED),
        }
        wanted.append(Wanted(BITRIX_NAME, IntegrationKind.BITRIX24, fields))
    if settings.N8N_WEBHOOK_URL:
        fields = {
            "endpoint": ("N8N_WEBHOOK_URL", settings.N8N_WEBHOOK_URL),
            "enabled": ("N8N_ENABLED", settings.N8N_ENABLED),
        }
        if settings.N8N_WEBHOOK_SECRET:  # otherwise the stored secret stays (one is generated for a new integration)
            fields["secret"] = ("N8N_WEBHOOK_SECRET", settings.N8N_WEBHOOK_SECRET)
        wanted.append(Wanted(N8N_NAME, IntegrationKind.N8N, fields))
    return wanted


def validate_wanted(wanted: Wanted) -> None:
    values = {name: value for name, (_, value) in wanted.fields.items()}
    try:
        config.validate_integration_config(
            kind=wanted.kind,
            endpoint=str(values["endpoint"]),
            secret=str(values.get("secret") or generate_secret()),
            rate_limit=str(values.get("rate_limit") or ""),
        )
    except ValidationError as exc:
        raise BootstrapError(
            "; ".join(
                f"{wanted.fields[f][0]}: {' '.join(m)}" for f, m in exc.message_dict.items() if f in wanted.fields
            )
        ) from None


@transaction.atomic
def integrations_bootstrap_from_env(*, overwrite: bool = False) -> list[str]:
    """Returns a line per integration and per field kept or changed (never with secrets). Raises BootstrapError."""
    wanted = wanted_from_env()
    for each in wanted:
        validate_wanted(each)
    lines = []
    for each in wanted:
        lines.extend(_apply(each, overwrite=overwrite))
    return lines


def _apply(wanted: Wanted, *, overwrite: bool) -> list[str]:
    integration = Integration.objects.select_for_update().filter(name=wanted.name).first()
    if integration is None:
        integration = Integration(name=wanted.name, kind=wanted.kind)
        for field, (_, value) in wanted.fields.items():
            setattr(integration, field, value)
        integration.secret = integration.secret or ("" if wanted.kind != IntegrationKind.N8N else generate_secret())
        integration.bootstrap_applied = {f: fingerprint(v) for f, (_, v) in wanted.fields.items()}
        if not integration.enabled:
            integration.disabled_reason = f"{wanted.fields['enabled'][0]} is off (sync_bootstrap)"
        integration.save()
        return [f"{wanted.name}: created (enabled={integration.enabled})"]
    was_enabled = integration.enabled
    lines, changed = [], []
    applied = dict(integration.bootstrap_applied or {})
    unusable = _unusable_fields(integration)  # a value delivery cannot use is no edit worth keeping
    if integration.kind != wanted.kind:
        integration.kind = wanted.kind
        changed.append("kind")
    for field, (variable, value) in wanted.fields.items():
        current = getattr(integration, field)
        if current == value:
            applied[field] = fingerprint(value)
        elif overwrite or field in unusable or applied.get(field) == fingerprint(current):  # else: edited since
            setattr(integration, field, value)
            applied[field] = fingerprint(value)
            changed.append(field)
            why = f" (the stored value could not be used: {unusable[field]})" if field in unusable else ""
            lines.append(f"{wanted.name}: {_shown(field, value)} from {variable}{why}")
        else:
            lines.append(f"{wanted.name}: {_kept(integration, field, variable)}")
    if "enabled" in changed and not integration.enabled:
        integration.disabled_reason = f"{wanted.fields['enabled'][0]} is off (sync_bootstrap)"
        changed.append("disabled_reason")
    if integration.bootstrap_applied != applied:
        integration.bootstrap_applied = applied
        changed.append("bootstrap_applied")
    if changed:
        integration.save(update_fields=[*changed, "updated_at"])
    if not config.delivery_config_error(integration):
        config.integration_config_fixed(integration=integration)
    if integration.enabled and not was_enabled:
        lines.append(integration_reenabled(integration=integration))
    return lines or [f"{wanted.name}: up to date (enabled={integration.enabled})"]


def _unusable_fields(integration: Integration) -> dict[str, str]:
    """{field: message} of the stored values the validator refuses."""
    try:
        integration.clean()
    except ValidationError as exc:
        return {field: " ".join(messages) for field, messages in exc.message_dict.items()}
    return {}


def fingerprint(value: object) -> str:
    """Short hash of a value: enough to tell whether a field still holds what we wrote, without storing a secret."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def _shown(field: str, value: object) -> str:
    if field in ("endpoint", "secret"):
        return f"{field} updated"
    return f"{field} set to {value}"


def _kept(integration: Integration, field: str, variable: str) -> str:
    """The line for a field changed outside bootstrap, which stays as it is."""
    if field == "enabled" and not integration.enabled:
        reason = f" ({integration.disabled_reason})" if integration.disabled_reason else ""
        return (
            f"left disabled{reason} although {variable} is on: it was disabled since the last bootstrap; enable it "
            "in the admin, or run sync_bootstrap --overwrite"
        )
    shown = "" if field in ("endpoint", "secret") else f" ({getattr(integration, field)})"
    return (
        f"{field}{shown} was changed in the admin and differs from {variable}: kept; "
        "sync_bootstrap --overwrite applies the env value"
    )
