"""Fault-tolerance suite, QUICK profile: real Celery workers, faulty sandboxes, ~300 orders, then invariants.

What runs: two `celery -A app worker` processes (prefork, concurrency 2) against the test database and Redis db 9,
a sweeper thread standing in for beat (`sweep_due_syncs.delay()` every second), the Bitrix24 sandbox (5xx 20 %,
timeout 5 %, lost response 5 %, rate limit on) and the n8n receiver (503 for a stretch) in this process.
Traffic goes through the services (users.services / orders.services) while faults are injected: SIGKILL of a worker
mid-delivery, SIGTERM of the other (deploy), pg_terminate_backend of the workers' connections, broker unreachable at
commit, FLUSHDB of the broker's Redis db. Then faults stop, the system drains, and every invariant is checked.
docs/reliability.md explains it; FAULTS_REPORT=<path> writes the table there too.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from integrations.models import (
    OPEN_STATUSES,
    Integration,
    IntegrationKind,
    IntegrationSync,
    SyncAttempt,
    SyncStatus,
)

BASE_DIR = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("FAULTS_REDIS_URL", "redis://127.0.0.1:6379/9")
DEAD_BROKER_URL = "redis://127.0.0.1:1/9"  # nothing listens there: "broker unreachable at commit"
SEED = int(os.environ.get("FAULTS_SEED", "20261123"))
# Quick profile by default; FAULTS_ORDERS / FAULTS_USERS scale it up (full profile: 5000 / 500, docs/reliability.md).
N_ORDERS = int(os.environ.get("FAULTS_ORDERS", "300"))
N_USERS = int(os.environ.get("FAULTS_USERS", "40"))
SCALE = max(1.0, N_ORDERS / 300)
TRAFFIC_SECONDS = 40.0 * SCALE  # spread the writes so that faults land while deliveries are in flight
DRAIN_SECONDS = 75.0 * SCALE
STAGES = django_settings.BITRIX_STAGE_MAP
NEXT_STATUS = {"new": "confirmed", "confirmed": "in_progress", "in_progress": "done"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(300 * SCALE))]


# -- processes ---------------------------------------------------------------------------------------------------
class Worker:
    """One `celery worker` process group started by this test (so it can be killed with its pool children)."""

    count = 0

    def __init__(self, env: dict, log_dir: Path):
        Worker.count += 1
        self.name = f"faults{Worker.count}"
        self.log_path = log_dir / f"{self.name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "app",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{self.name}@%h",
            ],  # fmt: skip
            cwd=BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM (warm shutdown), SIGKILL after timeout; returns seconds it took."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        self.signal(signal.SIGKILL)  # pool children that outlived their parent, if any
        self._log.close()
        return time.monotonic() - started

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def child_env(db_name: str) -> dict:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "N8N_", "SYNC_", "PYTEST"))}
    host = db["HOST"] or "127.0.0.1"
    location = "" if host.startswith("/") else f"{host}:{db['PORT'] or 5432}"
    if host.startswith("/"):  # embedded PostgreSQL on a unix socket: libpq takes the directory from PGHOST
        env["PGHOST"] = host
    env.update(
        DJANGO_SETTINGS_MODULE="app.settings",
        DATABASE_URL=f"postgres://{auth}@{location}/{db_name}",
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        SECRET_KEY=os.environ.get("SECRET_KEY") or "faults-suite-only",
        DEBUG="false",
        BITRIX_TIMEOUT="2,1",
        SYNC_LEASE_SECONDS="5",
        SYNC_MAX_ATTEMPTS="8",
        SYNC_WAKEUP_ENABLED="true",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def celery_broker(url: str):
    """Point this process's Celery producer at `url` (wake-ups and sweeps go where the test workers listen)."""
    from app.celery import app

    def reset_pools():  # drop references only: kombu's global producer registry may still share the old pools
        app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.broker_url
    reset_pools()
    app.conf.broker_url = url
    try:
        yield app
    finally:
        reset_pools()
        app.conf.broker_url = previous
        reset_pools()


class Sweeper(threading.Thread):
    """Stands in for beat: sweep_due_syncs.delay() every second (skipped while the queue already has a backlog)."""

    def __init__(self, redis_client):
        super().__init__(name="faults-sweeper", daemon=True)
        self.redis = redis_client
        self.stop_event = threading.Event()
        self.sent = self.failed = 0

    def run(self) -> None:
        from integrations.tasks import sweep_due_syncs

        while not self.stop_event.wait(1.0):
            try:
                if self.redis.llen("celery") < 20:
                    sweep_due_syncs.apply_async(retry=False)
                    self.sent += 1
            except Exception:  # noqa: BLE001 - broker down or flushed: the next tick tries again
                self.failed += 1


# -- traffic -----------------------------------------------------------------------------------------------------
class Traffic:
    """Random writes through the service layer; remembers what the final state must be."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.users: list = []
        self.orders: dict[int, object] = {}
        self.deleted: dict[int, int] = {}  # order pk -> user pk
        self.order_owner: dict[int, int] = {}
        self.counts: Counter[str] = Counter()
        self.email_version = 0

    def create_user(self):
        from users import services as user_services

        n = len(self.users)
        user = user_services.user_create(
            email=f"faults-{n}@example.com", first_name=f"F{n}", last_name="Customer", phone=f"+1555000{n:04d}"
        )
        self.users.append(user)
        self.counts["users created"] += 1
        return user

    def step(self, created_so_far: int) -> None:
        from orders import services as order_services
        from users import services as user_services

        rng = self.rng
        if len(self.users) < N_USERS and (not self.users or rng.random() < 0.15):
            self.create_user()
            return
        roll = rng.random()
        if created_so_far < N_ORDERS and (roll < 0.40 or not self.orders):
            user = rng.choice(self.users)
            order = order_services.order_create(
                user=user, title=f"Faults order {created_so_far}", amount=Decimal(rng.randint(100, 99999)) / 100
            )
            self.orders[order.pk] = order
            self.order_owner[order.pk] = user.pk
            self.counts["orders created"] += 1
        elif roll < 0.62 and self.orders:
            order = self.orders[rng.choice(list(self.orders))]
            data = {"amount": Decimal(rng.randint(100, 99999)) / 100}
            if rng.random() < 0.3:
                data["title"] = f"renamed {rng.randint(0, 10**6)}"
            self.orders[order.pk] = order_services.order_update(order=order, data=data)
            self.counts["order updates"] += 1
        elif roll < 0.82 and self.orders:
            order = self.orders[rng.choice(list(self.orders))]
            order.refresh_from_db()
            nxt = "cancelled" if rng.random() < 0.1 else NEXT_STATUS.get(order.status)
            if nxt and nxt != order.status and order.status not in ("done", "cancelled"):
                self.orders[order.pk] = order_services.order_change_status(order=order, status=nxt)
                self.counts["status changes"] += 1
        elif roll < 0.95:
            user = rng.choice(self.users)
            self.email_version += 1
            user_services.user_update(user=user, data={"email": f"faults-{user.pk}-v{self.email_version}@example.com"})
            self.counts["e-mail changes"] += 1
        elif self.orders and self.counts["order deletes"] < 8:
            pk = rng.choice(list(self.orders))
            order = self.orders.pop(pk)
            self.deleted[pk] = self.order_owner[pk]
            order_services.order_delete(order=order)
            self.counts["order deletes"] += 1


# -- the test ----------------------------------------------------------------------------------------------------
@pytest.fixture
def faults_redis():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"fault suite needs Redis at {REDIS_URL}: {exc}")
    client.flushdb()
    yield client
    client.flushdb()


def stats_rate_limited(sandbox) -> int:
    return dict(sandbox.stats).get("rate_limited", 0)


def in_progress_count() -> int:
    return IntegrationSync.objects.filter(status=SyncStatus.IN_PROGRESS).count()


def wait_until(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def terminate_worker_connections(db_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [db_name],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_quick_profile_survives_faults_and_converges(settings, faults_redis, tmp_path):
    from integrations.clients.n8n import generate_secret
    from integrations.sandbox.bitrix24 import BitrixSandbox
    from integrations.sandbox.bitrix24.faults import LeakyBucket
    from integrations.sandbox.n8n import N8nReceiver

    started = time.monotonic()
    settings.SYNC_WAKEUP_ENABLED = True
    db_name = connection.settings_dict["NAME"]
    env = child_env(db_name)
    rng = random.Random(SEED)
    injected: list[tuple[str, str, str]] = []  # (fault, how, observed right away)

    sandbox = BitrixSandbox(rate=50, burst=500, enforce_rate_limit=True)
    sandbox.set_faults(error_5xx=0.20, timeout=0.05, lost_response=0.05, seed=SEED, timeout_seconds=2)
    sandbox.start()
    receiver = N8nReceiver(secret=generate_secret()).start()
    gone_receiver = N8nReceiver(secret=generate_secret()).start()  # a second flow whose endpoint is removed late
    Integration.objects.create(
        kind=IntegrationKind.BITRIX24, name="bitrix-faults", endpoint=sandbox.webhook_url, rate_limit="20/100"
    )
    n8n = Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n-faults", endpoint=receiver.url, secret=receiver.secrets[0]
    )
    gone = Integration.objects.create(
        kind=IntegrationKind.N8N, name="n8n-gone", endpoint=gone_receiver.url, secret=gone_receiver.secrets[0]
    )
    workers = [Worker(env, tmp_path), Worker(env, tmp_path)]
    retired: list[Worker] = []
    traffic = Traffic(rng)
    sweeper = Sweeper(faults_redis)
    report: dict[str, object] = {}
    try:
        with celery_broker(REDIS_URL):
            sweeper.start()
            # ---- traffic with faults ------------------------------------------------------------------------------
            total_steps = 3 * N_ORDERS
            plan = {int(total_steps * f): action for f, action in (
                (0.10, "n8n_503"), (0.20, "sigkill"), (0.33, "broker_down"), (0.47, "pg_terminate"), (0.60, "flushdb"),
                (0.73, "sigterm"), (0.90, "n8n_gone"), (0.40, "rate_limit_on"), (0.44, "rate_limit_off"))}  # fmt: skip
            broker_down_left = 0
            pace = TRAFFIC_SECONDS / total_steps
            step = 0
            while step < total_steps or traffic.counts["orders created"] < N_ORDERS:
                t0 = time.monotonic()
                action = plan.get(step)
                if action == "n8n_503":
                    receiver.respond_with(503, times=40)
                    injected.append(("n8n 503 stretch", "respond_with(503, times=40)", "40 answers queued"))
                elif action == "sigkill":
                    busy = wait_until(lambda: in_progress_count() > 0, 5.0, 0.02)
                    n_busy = in_progress_count()
                    victim = workers.pop(0)
                    victim.signal(signal.SIGKILL)
                    victim.proc.wait(10)
                    retired.append(victim)
                    workers.append(Worker(env, tmp_path))
                    injected.append(
                        ("SIGKILL worker", f"{victim.name} (+pool), replacement started",
                         f"{n_busy} rows in_progress at kill" + ("" if busy else " (none seen in 5 s)"))
                    )  # fmt: skip
                elif action == "broker_down":
                    # One real write against an unreachable broker (the wake-up fails inside on_commit, the write
                    # stands), then 10 writes with wake-ups switched off (SYNC_WAKEUP_ENABLED=False): each refused
                    # publish costs ~6 s of client retries, too slow to repeat in the quick profile.
                    with celery_broker(DEAD_BROKER_URL):
                        t_dead = time.monotonic()
                        traffic.step(traffic.counts["orders created"])
                        dead_cost = time.monotonic() - t_dead
                    settings.SYNC_WAKEUP_ENABLED = False
                    broker_down_left = 10
                elif action == "pg_terminate":
                    killed = terminate_worker_connections(db_name)
                    injected.append(("pg_terminate_backend", "all other backends of the test DB", f"{killed} killed"))
                elif action == "flushdb":
                    queued = faults_redis.llen("celery")
                    faults_redis.flushdb()
                    injected.append(("Redis FLUSHDB db 9", "broker queue + rate-limit bucket", f"{queued} msgs lost"))
                elif action == "rate_limit_on":
                    # A portal-side burst of 503 QUERY_LIMIT_EXCEEDED: its bucket shrinks below ours for a while.
                    limited_before = sandbox.stats.get("rate_limited", 0)
                    sandbox.bucket = LeakyBucket(1, 2)
                elif action == "rate_limit_off":
                    sandbox.bucket = LeakyBucket(50, 500)
                    injected.append(
                        ("Bitrix rate-limit burst", "portal bucket 1/s burst 2 for 4 % of the traffic",
                         f"{sandbox.stats.get('rate_limited', 0) - limited_before} × 503 QUERY_LIMIT_EXCEEDED")
                    )  # fmt: skip
                elif action == "n8n_gone":
                    gone_receiver.respond_with(410)
                    injected.append(("n8n endpoint answers 410", "second n8n integration, from here on", "410 Gone"))
                elif action == "sigterm":
                    victim = workers.pop(0)
                    victim.signal(signal.SIGTERM)
                    retired.append(victim)
                    workers.append(Worker(env, tmp_path))
                    injected.append(("SIGTERM worker (deploy)", f"{victim.name}, replacement started", "warm shutdown"))
                traffic.step(traffic.counts["orders created"])
                if broker_down_left:
                    broker_down_left -= 1
                    if not broker_down_left:
                        settings.SYNC_WAKEUP_ENABLED = True
                        injected.append(
                            ("broker unreachable at commit",
                             f"1 write with broker {DEAD_BROKER_URL}; 10 writes with SYNC_WAKEUP_ENABLED=False",
                             f"write committed, wake-up lost after {dead_cost:.1f} s; rows left to the sweeper")
                        )  # fmt: skip
                step += 1
                time.sleep(max(0.0, pace - (time.monotonic() - t0)))
            traffic_done = time.monotonic()
            report["traffic seconds"] = f"{traffic_done - started:.1f}"
            for w in retired:
                if w.alive():
                    try:
                        w.proc.wait(max(0.1, 25 - (time.monotonic() - traffic_done)))
                    except subprocess.TimeoutExpired:
                        pass
            report["SIGTERM'd worker exited"] = "yes" if not retired[-1].alive() else "no (killed at the end)"

            # ---- faults off, drain --------------------------------------------------------------------------------
            sandbox.set_faults(timeout_seconds=2)
            drain_started = time.monotonic()
            while time.monotonic() - drain_started < DRAIN_SECONDS:
                open_rows = IntegrationSync.objects.filter(status__in=OPEN_STATUSES)
                if not open_rows.exists():
                    break
                # no waiting out backoff: scheduled retries become due now (the sweeper and wake-ups pick them up)
                open_rows.filter(status__in=[SyncStatus.PENDING, SyncStatus.RETRYING]).update(
                    next_attempt_at=timezone.now() - timedelta(seconds=1)
                )
                if os.environ.get("FAULTS_DEBUG"):
                    print(
                        f"[drain {time.monotonic() - drain_started:.0f}s]",
                        list(open_rows.values_list("integration__name", "status").annotate(n=Count("id"))),
                        list(Integration.objects.values_list("name", "paused_until", "consecutive_failures")),
                        flush=True,
                    )
                time.sleep(1.0)
            report["drain seconds"] = f"{time.monotonic() - drain_started:.1f}"
            sweeper.stop_event.set()
            sweeper.join(5)
        for w in workers + retired:
            w.stop()
    finally:
        sweeper.stop_event.set()
        for w in workers + retired:
            if w.alive() or not w._log.closed:
                w.stop(5)
        sandbox.stop()
        receiver.stop()
        gone_receiver.stop()

    # ---- invariants ------------------------------------------------------------------------------------------------
    from orders.models import Order
    from users.models import User

    breaches: list[str] = []
    rows = IntegrationSync.objects.all()
    by_status = dict(rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    open_left = rows.filter(status__in=OPEN_STATUSES).count()
    if open_left:
        sample = list(rows.filter(status__in=OPEN_STATUSES).values_list("id", "status", "last_error")[:5])
        breaches.append(f"{open_left} sync rows left non-terminal, e.g. {sample}")
    # The only terminal fault injected is the 410 of the second n8n endpoint: dead/failed rows elsewhere are breaches.
    bad_end = rows.filter(status__in=[SyncStatus.DEAD, SyncStatus.FAILED])
    if bad_end.exclude(integration=gone).exists():
        sample = list(bad_end.exclude(integration=gone).values_list("id", "status", "last_error")[:5])
        breaches.append(f"dead/failed rows without a terminal fault: {sample}")
    gone.refresh_from_db()
    gone_rows = rows.filter(integration=gone)
    gone_by_status = dict(gone_rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    if gone.enabled or "410" not in gone.disabled_reason:
        breaches.append(f"the 410 endpoint's integration is not disabled with its reason: {gone.disabled_reason!r}")
    if gone_rows.filter(status=SyncStatus.FAILED).exclude(last_error__contains="410").exists():
        breaches.append("a failed row of the 410 endpoint does not say why")
    if gone_rows.filter(status=SyncStatus.SKIPPED).exclude(last_error__contains="disabled").exists():
        breaches.append("a skipped row of the 410 endpoint does not say why")
    if gone_rows.exclude(status__in=[SyncStatus.SYNCED, SyncStatus.FAILED, SyncStatus.SKIPPED]).exists():
        breaches.append(f"rows of the 410 endpoint ended otherwise: {gone_by_status}")
    if not gone_rows.filter(status=SyncStatus.FAILED).exists():
        breaches.append("the 410 was injected but no row of that endpoint failed with it")

    deals, contacts = list(sandbox.deals.values()), list(sandbox.contacts.values())
    deals_by_origin, contacts_by_origin = defaultdict(list), defaultdict(list)
    for d in deals:
        deals_by_origin[str(d.get("ORIGIN_ID"))].append(d)
    for c in contacts:
        contacts_by_origin[str(c.get("ORIGIN_ID"))].append(c)
    orders = {o.pk: o for o in Order.objects.all()}
    all_order_ids = set(orders) | set(traffic.deleted)
    dup_deals = {k: len(v) for k, v in deals_by_origin.items() if len(v) != 1}
    missing_deals = [pk for pk in all_order_ids if str(pk) not in deals_by_origin]
    if dup_deals or missing_deals or len(deals_by_origin) != len(all_order_ids):
        breaches.append(f"deals: duplicates {dup_deals}, missing {missing_deals[:10]}, total {len(deals)}")
    wrong_deals = []
    for pk in all_order_ids:
        found = deals_by_origin.get(str(pk)) or [{}]
        deal = found[0]
        if pk in orders:
            want = (STAGES[orders[pk].status], Decimal(orders[pk].amount))
            got = (str(deal.get("STAGE_ID")), Decimal(str(deal.get("OPPORTUNITY", "nan"))))
        else:
            want, got = (STAGES["cancelled"],), (str(deal.get("STAGE_ID")),)
        if want != got:
            wrong_deals.append((pk, want, got))
    if wrong_deals:
        breaches.append(f"{len(wrong_deals)} deals differ from the DB, e.g. {wrong_deals[:5]}")
    customers = {u.pk: u for u in User.objects.filter(is_staff=False)}
    dup_contacts = {k: len(v) for k, v in contacts_by_origin.items() if len(v) != 1}
    missing_contacts = [pk for pk in customers if str(pk) not in contacts_by_origin]
    if dup_contacts or missing_contacts or len(contacts_by_origin) != len(customers):
        breaches.append(f"contacts: duplicates {dup_contacts}, missing {missing_contacts}")
    wrong_emails = []
    for pk, user in customers.items():
        contact = (contacts_by_origin.get(str(pk)) or [{}])[0]
        emails = [e.get("VALUE") for e in contact.get("EMAIL") or []]
        if emails != [user.email]:
            wrong_emails.append((pk, user.email, emails))
    if not stats_rate_limited(sandbox):
        breaches.append("the rate-limit burst was injected but the portal never answered 503")
    if wrong_emails:
        breaches.append(f"{len(wrong_emails)} contacts' EMAIL differ from the DB, e.g. {wrong_emails[:5]}")

    n8n_rows = rows.filter(integration=n8n)
    not_synced = n8n_rows.exclude(status=SyncStatus.SYNCED).count()
    if not_synced:
        breaches.append(f"{not_synced} n8n rows not synced")
    unique = receiver.unique_events()
    unique_ids = [e.webhook_id for e in unique]
    expected_ids = {str(i) for i in n8n_rows.values_list("event_id", flat=True)}
    if len(unique_ids) != len(set(unique_ids)):
        breaches.append("an event id appears twice in unique_events()")
    if set(unique_ids) != expected_ids:
        breaches.append(
            f"n8n events: {len(expected_ids - set(unique_ids))} missing, {len(set(unique_ids) - expected_ids)} unknown"
        )
    if any(isinstance(e.body, dict) and e.body.get("id") != e.webhook_id for e in unique):
        breaches.append("n8n body id differs from webhook-id")
    per_object: dict[tuple, list[int]] = defaultdict(list)
    for e in unique:
        obj = e.body.get("object", {})
        per_object[(obj.get("type"), obj.get("id"))].append(e.body.get("sequence"))
    out_of_order = {k: v for k, v in per_object.items() if v != sorted(v)}
    if out_of_order:
        breaches.append(f"n8n out of order for {len(out_of_order)} objects, e.g. {list(out_of_order.items())[:3]}")

    # ---- secrets: nothing the workers logged during the whole run may contain one ----------------------------------
    secrets = [sandbox.code, *receiver.secrets, *gone_receiver.secrets]
    secrets += [s.split("_", 1)[1] for s in secrets if s.startswith("whsec_")]  # the key without its prefix
    worker_logs = [(w.name, w.log_path.read_text(errors="replace")) for w in workers + retired]
    leaked = [name for name, text in worker_logs for secret in secrets if secret and secret in text]
    if leaked:
        breaches.append(f"a secret appears in the logs of {sorted(set(leaked))}")
    log_lines = sum(text.count("\n") for _, text in worker_logs)

    # ---- report ------------------------------------------------------------------------------------------------
    attempts = dict(SyncAttempt.objects.values_list("outcome").annotate(n=Count("id")).values_list("outcome", "n"))
    stats = dict(sandbox.stats)
    injected[:0] = [
        ("Bitrix 5xx (20 %)", "sandbox random", f"{stats.get('fault_error_5xx', 0)} requests"),
        ("Bitrix timeout (5 %, hangs 2 s > read 1 s)", "sandbox random", f"{stats.get('fault_timeout', 0)} requests"),
        ("Bitrix lost response (5 %, applied)", "sandbox random", f"{stats.get('fault_lost_response', 0)} requests"),
        (
            "Bitrix rate limit 503 (total)",
            "sandbox bucket 50/s burst 500 + the burst below",
            f"{stats.get('rate_limited', 0)} requests",
        ),
    ]
    n8n_503 = sum(1 for r in receiver.requests if r.status == 503)
    lines = [
        "| Fault injected | How | Observed |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in injected],
        "",
        "| Outcome | Value |",
        "|---|---|",
        f"| traffic | {', '.join(f'{k}: {v}' for k, v in sorted(traffic.counts.items()))} |",
        f"| sync rows by status | {', '.join(f'{k}: {v}' for k, v in sorted(by_status.items()))} |",
        f"| delivery attempts by outcome | {', '.join(f'{k}: {v}' for k, v in sorted(attempts.items()))} |",
        f"| Bitrix requests / deals / contacts | {stats.get('requests', 0)} / {len(deals)} / {len(contacts)} |",
        f"| duplicate deals / contacts / EMAIL entries | {len(dup_deals)} / {len(dup_contacts)} / "
        f"{sum(1 for _, _, got in wrong_emails if len(got) > 1)} |",
        f"| n8n requests / 503s served / unique events / duplicates (deduped by webhook-id) | "
        f"{len(receiver.requests)} / {n8n_503} / {len(unique)} / {receiver.duplicates} |",
        f"| sweeps sent / failed | {sweeper.sent} / {sweeper.failed} |",
        f"| worker log lines scanned for secrets / leaks | {log_lines} / {len(leaked)} |",
        f"| 410 endpoint: rows by status | {', '.join(f'{k}: {v}' for k, v in sorted(gone_by_status.items()))} |",
        *[f"| {k} | {v} |" for k, v in report.items()],
        f"| wall time | {time.monotonic() - started:.0f} s |",
        f"| invariant breaches | {len(breaches)} |",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    if os.environ.get("FAULTS_REPORT"):
        Path(os.environ["FAULTS_REPORT"]).write_text(table + "\n")
    if breaches:
        logs = "\n".join(f"--- {w.name}\n{w.tail(15)}" for w in workers + retired)
        pytest.fail("invariants breached:\n- " + "\n- ".join(breaches) + "\n" + table + "\n" + logs)
