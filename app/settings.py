"""Settings from one environ.Env(); with nothing set, the embedded PostgreSQL and Redis (see app/embedded.py)."""

import base64
import hashlib
import os
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from integrations.policy import lease_too_short  # pure: no Django models

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
DATA_DIR = Path(env.str("EMBEDDED_DATA_DIR", default=str(BASE_DIR / ".data")))
if (BASE_DIR / ".env").exists():
    env.read_env(str(BASE_DIR / ".env"))

EMBEDDED = not env.str("DATABASE_URL", default="")
DEBUG = env.bool("DEBUG", default=EMBEDDED)
RUNNING_TESTS = "pytest" in sys.modules
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not (DEBUG or EMBEDDED or RUNNING_TESTS):
        raise ImproperlyConfigured("Set SECRET_KEY (required when DATABASE_URL points at a production database).")
    SECRET_KEY = "insecure-local-only-key"
# Secrets at rest (Integration.endpoint and signing secrets; integrations/fields.py): comma-separated Fernet keys, the
# first encrypts, all decrypt (rotation: put a new key first, run `manage.py rotate_encryption_key`, drop the old one).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
if not FIELD_ENCRYPTION_KEYS:
    if not (DEBUG or EMBEDDED or RUNNING_TESTS):
        raise ImproperlyConfigured(
            "Set FIELD_ENCRYPTION_KEYS; generate a key with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    # Local and test runs: a key derived from SECRET_KEY, so nothing else needs to be set.
    FIELD_ENCRYPTION_KEYS = [
        base64.urlsafe_b64encode(hashlib.sha256(f"shop-sync field encryption|{SECRET_KEY}".encode()).digest()).decode()
    ]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "drf_spectacular_sidecar",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "users",
    "orders",
    "integrations",
]

MIDDLEWARE = [
    "app.health.HealthMiddleware",  # first: probes are answered whatever their Host header
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "app.urls"
WSGI_APPLICATION = "app.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if EMBEDDED:
    # pgserver listens on a unix socket inside .data/ (never SQLite: the sync engine relies on SKIP LOCKED).
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": str(DATA_DIR / "pg"),
        }
    }
else:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DATABASES["default"].setdefault("TEST", {})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "users.User"

EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
REDIS_URL = env.str("REDIS_URL", default=f"unix://{EMBEDDED_REDIS_SOCKET}")
# redis-py spells a unix socket unix://, kombu redis+socket://: either spelling works for either setting.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
if CELERY_BROKER_URL.startswith("unix://"):
    CELERY_BROKER_URL = CELERY_BROKER_URL.replace("unix://", "redis+socket://", 1)
    if "CELERY_BROKER_URL" in os.environ:  # Celery reads the variable itself, before this setting
        os.environ["CELERY_BROKER_URL"] = CELERY_BROKER_URL

# The shared cache (throttle counters): Redis, so every web process counts together.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "shop-sync",
        "TIMEOUT": 300,
        "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env.int("PASSWORD_MIN_LENGTH", default=10)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# collectstatic (run in the image build) writes hashed, gzip-compressed copies and a manifest into STATIC_ROOT;
# WhiteNoise serves them, hashed names cached for a year. Without a manifest (tests, DEBUG, a process started from a
# checkout) the plain names are served from the apps' static folders instead, looked up per request.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "app.static_storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = DEBUG or not (STATIC_ROOT / "staticfiles.json").exists()

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "app.openapi.AutoSchema",
    # Authentication is throttled per address and per username (app/throttles.py): 429 with Retry-After.
    "DEFAULT_THROTTLE_RATES": {
        "login": env.str("THROTTLE_LOGIN_RATE", default="10/min"),
        "login_username": env.str("THROTTLE_LOGIN_USERNAME_RATE", default="5/min"),
    },
    # Client address = REMOTE_ADDR unless the web runs behind that many trusted proxies (then X-Forwarded-For):
    # trusting X-Forwarded-For by default would let a client pick its own address and dodge the throttle.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "EXCEPTION_HANDLER": "app.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Shop sync API",
    "DESCRIPTION": "Customers and orders, kept in sync with Bitrix24 and n8n.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files (pinned, offline), not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery (DESIGN §7): late acks, no prefetch hoarding, JSON only, hard limit well below the visibility timeout.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
# A broker that is down or hung must cost bounded time, never a blocked process: redis-py waits forever by default
# (no socket timeout), and kombu retries a failed connect for broker_connection_timeout seconds in total before a
# publish gives up. The web sends its hints from a background thread anyway (integrations/background.py); these
# bound that thread, and the publishes of beat and the workers. socket_timeout stays well above the worker's 1 s BRPOP.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 2, "socket_timeout": 5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Short tasks get a queue of their own so they never wait behind a backlog of deliveries (each drains up to 20 s):
# heartbeats, the sweep (it only enqueues) and inbound calls. Every worker consumes both queues (`-Q celery,light`);
# a worker for the light queue alone (`-Q light`) also keeps them running while all delivery slots are busy.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    f"integrations.tasks.{name}": {"queue": "light"}
    for name in ("beat_heartbeat", "sweep_due_syncs", "process_inbound", "requeue_stale_inbound")
}

# Integrations (DESIGN §6).
BITRIX_ENABLED = env.bool("BITRIX_ENABLED", default=False)
BITRIX_WEBHOOK_URL = env.str("BITRIX_WEBHOOK_URL", default="")
BITRIX_WEBHOOK_TOKEN = env.str("BITRIX_WEBHOOK_TOKEN", default="")
BITRIX_APPLICATION_TOKEN = env.str("BITRIX_APPLICATION_TOKEN", default="")
BITRIX_ORIGINATOR_ID = env.str("BITRIX_ORIGINATOR_ID", default="django-orders")
BITRIX_RATE_LIMIT = env.str("BITRIX_RATE_LIMIT", default="2/50")
BITRIX_TIMEOUT = env.tuple("BITRIX_TIMEOUT", cast=float, default=(5.0, 65.0))  # connect, read seconds
BITRIX_STAGE_MAP = env.dict(
    "BITRIX_STAGE_MAP",
    default={
        "new": "NEW",
        "confirmed": "PREPARATION",
        "in_progress": "EXECUTING",
        "done": "WON",
        "cancelled": "LOSE",
    },
)
# Catch-up (docs/bitrix24.md, "Catch-up"): how far back each run re-reads, and at most how many list pages per run.
BITRIX_CATCHUP_OVERLAP_SECONDS = env.int("BITRIX_CATCHUP_OVERLAP_SECONDS", default=120)
BITRIX_CATCHUP_MAX_PAGES = env.int("BITRIX_CATCHUP_MAX_PAGES", default=20)
N8N_ENABLED = env.bool("N8N_ENABLED", default=False)
N8N_WEBHOOK_URL = env.str("N8N_WEBHOOK_URL", default="")
N8N_WEBHOOK_SECRET = env.str("N8N_WEBHOOK_SECRET", default="")
# Events of different objects POSTed at once by one worker (one object's events always go one after another).
N8N_CONCURRENCY = env.int("N8N_CONCURRENCY", default=8)
N8N_TIMEOUT = env.tuple("N8N_TIMEOUT", cast=float, default=(5.0, 15.0))  # connect, read seconds of every event POST
# /metrics answers scrapers sending `Authorization: Bearer <token>` and staff sessions; never anonymous callers.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# 20 tries at 5 s doubling, capped at 6 h, with full jitter: a sync keeps retrying for about a day before `dead`.
SYNC_MAX_ATTEMPTS = env.int("SYNC_MAX_ATTEMPTS", default=20)
SYNC_RETENTION_DAYS = env.int("SYNC_RETENTION_DAYS", default=90)
SYNC_FAILED_RETENTION_DAYS = env.int("SYNC_FAILED_RETENTION_DAYS", default=365)
SYNC_LEASE_SECONDS = env.int("SYNC_LEASE_SECONDS", default=120)
# A delivery round extends its lease between calls and sends nothing its lease cannot outlast, so the lease must be
# longer than any single call (docs/architecture.md, "Leases"): refused at start instead of never sending.
_lease_problem = lease_too_short(
    SYNC_LEASE_SECONDS, {"BITRIX_TIMEOUT": sum(BITRIX_TIMEOUT), "N8N_TIMEOUT": sum(N8N_TIMEOUT)}
)
if _lease_problem:
    raise ImproperlyConfigured(_lease_problem)
SYNC_WAKEUP_ENABLED = env.bool("SYNC_WAKEUP_ENABLED", default=True)
INBOUND_MAX_BODY_BYTES = env.int("INBOUND_MAX_BODY_BYTES", default=256 * 1024)
# Send the processing message of a stored inbound call from a background thread (the answer does not wait on the
# broker; a burst leaves as one message per 50 calls). Off: sent inline after commit, one message per call.
INBOUND_ENQUEUE_IN_BACKGROUND = env.bool("INBOUND_ENQUEUE_IN_BACKGROUND", default=True)

TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "app.logging.RedactSecretsFilter"}},
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Celery's "Task … received" / "… succeeded in" lines, one per task: the sync history records every delivery.
        **{name: {"level": env.str("TASK_LOG_LEVEL", default="WARNING")} for name in TASK_LOGGERS},
    },
}
