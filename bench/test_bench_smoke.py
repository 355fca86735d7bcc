"""`python -m bench --smoke` runs every metric end to end in a subprocess and produces a number for each."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_suite_produces_every_metric(tmp_path):
    out = tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(same_servers_as_this_run())
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert elapsed < 90
    results = json.loads(out.with_suffix(".json").read_text())
    metrics = {r["metric"].split(",")[0].split(" of ")[0]: r for r in results}
    assert all(r["unit"] != "error" for r in results), (
        [(r["metric"], r["note"]) for r in results if r["unit"] == "error"],
        proc.stderr[-3000:],
    )
    for result in results:
        assert isinstance(result["ours"], (int, float)), result
    expected = [
        "order save",
        "order write p99, broker down",
        "order write p99, broker hung",
        "Bitrix deals/s",
        "Bitrix calls for",
        "n8n events/s",
        "n8n delivery events/s",
        "commit→delivered p50",
        "commit→delivered p99",
        "retention cleanup",
        "retention longest batch",
        "new-sync dispatch latency",
        "inbound webhook",
        "catch-up calls/hour",
        "catch-up lag under load",
    ]
    for name in expected:
        assert any(r["metric"].startswith(name) for r in results), (name, list(metrics))
    assert "SMOKE" in out.read_text()


def same_servers_as_this_run() -> dict[str, str]:
    """The bench on this test run's PostgreSQL and Redis servers (the embedded ones on a fresh machine)."""
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings

    from integrations.tests.support import child_database_env

    env = child_database_env("postgres")
    env["BENCH_PG_URL"] = env.pop("DATABASE_URL").rsplit("/", 1)[0]
    redis = urlsplit(settings.REDIS_URL)
    env["BENCH_REDIS_URL"] = (
        f"unix://{redis.path}?db=11" if redis.scheme == "unix" else urlunsplit(redis._replace(path="/11"))
    )
    return env
