"""Shared fixtures: real PostgreSQL (pytest-django) and Redis, factories, and a recording test target."""

import os

import pytest
from django.conf import settings

# Processes the tests start (gunicorn, Celery, commands) run the production settings, which require encryption keys:
# they get the key this test run uses.
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", ",".join(settings.FIELD_ENCRYPTION_KEYS))


@pytest.fixture(autouse=True)
def _no_wakeups_by_default(settings):
    """Tests drive the dispatcher themselves; the ones about wake-ups turn them back on. Inbound messages are sent
    inline so a test sees them at once; tests of the background sender turn it back on."""
    settings.SYNC_WAKEUP_ENABLED = False
    settings.INBOUND_ENQUEUE_IN_BACKGROUND = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_throttle_counters():
    """Login throttle counters live in the Redis cache: each test starts from none (and never 429s on a rerun)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def recording_target():
    """Replace the n8n target by a RecordingTarget for engine tests; the integration is of kind n8n."""
    from integrations import targets
    from integrations.models import IntegrationKind
    from integrations.tests.support import RecordingTarget

    targets.target_for(IntegrationKind.N8N)  # load defaults first so ours is not overwritten
    previous = targets._registry[IntegrationKind.N8N]
    target = RecordingTarget()
    targets.register(IntegrationKind.N8N, target)
    yield target
    targets.register(IntegrationKind.N8N, previous)


@pytest.fixture
def n8n_receiver():
    from integrations.clients.n8n import generate_secret
    from integrations.sandbox.n8n import N8nReceiver

    receiver = N8nReceiver(secret=generate_secret()).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def n8n_integration(n8n_receiver):
    from integrations.models import Integration, IntegrationKind

    return Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n-test", endpoint=n8n_receiver.url, secret=n8n_receiver.secrets[0]
    )


@pytest.fixture
def bitrix_sandbox():
    from integrations.sandbox.bitrix24 import BitrixSandbox

    sandbox = BitrixSandbox()
    sandbox.set_faults(timeout_seconds=3)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def bitrix_integration(bitrix_sandbox, settings, redis_client):
    from integrations.models import Integration, IntegrationKind

    settings.BITRIX_TIMEOUT = (2.0, 1.0)
    return Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix-test", endpoint=bitrix_sandbox.webhook_url, rate_limit="2/50"
    )
