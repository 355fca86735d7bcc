"""Shared helpers of the operations commands: plain-text tables, ages, --since and --integration parsing (callers
mask secrets)."""

from datetime import datetime

from django.core.management.base import CommandError
from django.utils import timezone


def cell(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}"
    return " ".join(str(value).split())  # one line per row, whatever the value holds


def age(seconds: float | None) -> str:
    """90 → 90s, 600 → 10m, 10800 → 3h, 259200 → 3d."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def table(headers: list[str], rows: list[list], max_width: int = 60) -> str:
    texts = [[cell(v)[:max_width] for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in texts]
    return "\n".join(lines)


def parse_when(text: str) -> datetime:
    """ISO date or datetime for --since; naive values are in TIME_ZONE. Raises CommandError on bad input."""
    from django.core.management.base import CommandError
    from django.utils.dateparse import parse_date, parse_datetime

    try:
        value = parse_datetime(text)
        if value is None and parse_date(text) is not None:
            value = parse_datetime(f"{text}T00:00")
    except ValueError:
        value = None
    if value is None:
        raise CommandError(f"--since must be an ISO date or datetime like 2026-01-01T00:00, got {text!r}")
    return timezone.make_aware(value) if timezone.is_naive(value) else value


def find_integration(text: str):
    """--integration: an id or a name; a clear CommandError when there is none."""
    from integrations.models import Integration

    found = Integration.objects.filter(pk=int(text)) if text.isdigit() else Integration.objects.filter(name=text)
    integration = found.first()
    if integration is None:
        raise CommandError(f"no integration {text!r}")
    return integration
