"""Heartbeats, the sweep and inbound work go to their own queue, so they never wait behind deliveries (issue 20)."""

import re
from pathlib import Path

import pytest

from app.celery import app

ROOT = Path(__file__).resolve().parents[2]
LIGHT = ["beat_heartbeat", "sweep_due_syncs", "process_inbound", "requeue_stale_inbound"]
DELIVERIES = ["dispatch_integration", "dispatch_sync", "cleanup_sync_history", "reconcile_bitrix"]


def queue_of(task: str) -> str:
    route = app.amqp.router.route({}, f"integrations.tasks.{task}")
    return route["queue"].name


@pytest.mark.parametrize("task", LIGHT)
def test_light_tasks_are_routed_to_the_light_queue(task):
    assert queue_of(task) == "light"


@pytest.mark.parametrize("task", DELIVERIES)
def test_deliveries_and_long_tasks_stay_on_the_default_queue(task):
    assert queue_of(task) == "celery"


def consumed_queues(command: str) -> set[str]:
    found = re.search(r"(?:-Q|--queues)[ =\",]+([\w,]+)", command)
    return set(found.group(1).split(",")) if found else {"celery"}


@pytest.mark.parametrize("path", ["Procfile", "docker-compose.yml", "integrations/tests/faults/test_quick_profile.py"])
def test_every_worker_command_consumes_the_light_queue(path):
    text = (ROOT / path).read_text()
    # Lines of a worker command (compose writes it as a JSON list, the fault suite as a Python list).
    commands = [line for line in text.splitlines() if re.search(r'celery.*(app worker |"worker")', line)]
    assert commands, path
    assert all("light" in consumed_queues(c) for c in commands), commands
