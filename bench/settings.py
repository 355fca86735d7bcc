"""Bench-only settings: app.settings plus the django-webhook baseline app, eager Celery and the bench URLconf."""

from app.settings import *  # noqa: F403
from app.settings import INSTALLED_APPS, env

INSTALLED_APPS = [*INSTALLED_APPS, "django_webhook"]
ROOT_URLCONF = "bench.urls"
DEBUG = False
SYNC_WAKEUP_ENABLED = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The django-webhook baseline runs its task inline, as the issue asks; gunicorn (inbound bench) sets BENCH_EAGER=0
# so the inbound view enqueues to the Redis broker (db 11) like production.
CELERY_TASK_ALWAYS_EAGER = env.bool("BENCH_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = False
DJANGO_WEBHOOK = {"MODELS": ["orders.Order"], "USE_CACHE": True, "STORE_EVENTS": True}
