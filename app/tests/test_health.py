"""Liveness answers whatever the Host; readiness needs the database, reports the broker in bounded time."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
PROBE_HOST = "127.0.0.1:8000"  # what a container health check or a load balancer sends


@pytest.fixture
def production_hosts(settings):
    settings.ALLOWED_HOSTS = ["shop.example.com"]


@pytest.fixture
def silent_broker(settings):
    """A broker address that accepts TCP connections and never answers (listen backlog, nobody accepts)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        yield


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_liveness_answers_any_host_without_touching_the_database(client, production_hosts):
    # No db mark: pytest-django makes any query fail this test.
    response = client.get("/health/live/", HTTP_HOST=PROBE_HOST)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health/live/", HTTP_HOST="evil.example.org").status_code == 200


def test_other_paths_still_check_the_host(client, production_hosts):
    assert client.get("/health/live/x", HTTP_HOST=PROBE_HOST).status_code == 400
    assert client.get("/api/docs/", HTTP_HOST=PROBE_HOST).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/ready/", "/health/"])
def test_readiness_is_ok_with_database_and_broker_for_any_host(client, production_hosts, path):
    response = client.get(path, HTTP_HOST=PROBE_HOST)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "broker": True}}


@pytest.mark.django_db
def test_readiness_reports_an_unreachable_broker_without_failing(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/health/ready/")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": True, "broker": False}}


@pytest.mark.django_db
def test_readiness_does_not_hang_on_a_broker_that_accepts_and_never_answers(client, silent_broker):
    started = time.monotonic()
    response = client.get("/health/ready/")
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["checks"]["broker"] is False
    assert elapsed < 2.0, f"readiness took {elapsed:.1f} s"  # bounded at ~1 s; margin for a loaded machine


@pytest.mark.django_db
def test_readiness_checks_an_amqp_broker_by_connecting(client, settings, silent_broker):
    port = settings.CELERY_BROKER_URL.rsplit(":", 1)[1].split("/")[0]
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    assert client.get("/health/ready/").json()["checks"]["broker"] is True  # the port accepts connections
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    assert client.get("/health/ready/").json()["checks"]["broker"] is False


PROBE = """
import json, time, django
django.setup()
from django.test import Client
client = Client()
out = {}
for path in ("/health/live/", "/health/ready/", "/health/"):
    started = time.monotonic()
    response = client.get(path, HTTP_HOST="127.0.0.1:8000")
    out[path] = [response.status_code, json.loads(response.content), time.monotonic() - started]
print(json.dumps(out))
"""


def test_readiness_is_503_when_the_database_is_down_while_liveness_stays_200():
    """A real process whose DATABASE_URL points at a closed port (the test database cannot be taken down)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/nowhere",
        DJANGO_SETTINGS_MODULE="app.settings",
        SECRET_KEY="test-only",
        DEBUG="0",
        ALLOWED_HOSTS="shop.example.com",
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["/health/live/"][:2] == [200, {"status": "ok"}]
    for path in ("/health/ready/", "/health/"):
        status, body, _ = out[path]
        assert (status, body["status"], body["checks"]["database"]) == (503, "unavailable", False)
