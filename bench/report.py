"""Result rows, the printed table, and the markdown written to docs/benchmarks.md (or bench/out/ in smoke mode)."""

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

KEEP = "<!-- analysis: hand-written below this line, kept when python -m bench rewrites the file -->"


@dataclass
class Result:
    metric: str
    ours: float | None
    unit: str
    target: str
    baseline: float | None = None
    passed: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or self.ours is None:
            return None
        return self.ours / self.baseline


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (0–100)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(results: list[Result]) -> str:
    head = "| metric | baseline | ours | ratio | target | pass |\n|---|---|---|---|---|---|\n"
    rows = []
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[r.passed]
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        rows.append(
            f"| {r.metric} ({r.unit}) | {_fmt(r.baseline)} | {_fmt(r.ours)} | {ratio} | {r.target} | {verdict} |"
        )
    return head + "\n".join(rows) + "\n"


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    redis_version = ""
    try:
        import redis

        from bench.django_setup import REDIS_URL

        redis_version = redis.Redis.from_url(REDIS_URL).info("server").get("redis_version", "")
    except Exception:  # noqa: BLE001
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor(),
        "postgresql": pg,
        "redis": redis_version,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "commit": commit,
    }


def write(results: list[Result], *, smoke: bool, path: Path, details: str, elapsed: float) -> None:
    info = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Run: `python -m bench{' --smoke' if smoke else ''}` on {when}, {elapsed:.0f} s total"
        f"{' (SMOKE sizes: not representative)' if smoke else ''}.",
        "",
        f"Machine: {info['cores']} cores, {info['cpu']}; PostgreSQL {info['postgresql']}; Redis {info['redis']}; "
        f"Python {info['python']}; {info['os']}; commit {info['commit']}.",
        "",
        "Every baseline is measured in the same run, on the same PostgreSQL and Redis. Ratio = ours / baseline.",
        "",
        table(results),
        "## Notes per metric",
        "",
    ]
    for r in results:
        lines.append(f"- **{r.metric}**: {r.note or '—'}")
    lines += ["", details.rstrip(), ""]
    kept = path.read_text().split(KEEP, 1)[1] if path.exists() and KEEP in path.read_text() else ""
    if kept:
        lines += [KEEP + kept.rstrip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def dump_json(results: list[Result], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{**asdict(r), "ratio": r.ratio} for r in results], indent=2, default=str))
