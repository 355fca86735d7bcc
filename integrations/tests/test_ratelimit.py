"""The per-portal token bucket: burst, refill, and one shared budget across threads through real Redis (no Django)."""

import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings as django_settings

from integrations.ratelimit import TokenBucket, parse_rate

REDIS_URL = django_settings.REDIS_URL  # the machine's Redis, or the embedded one on a fresh machine


@pytest.fixture
def settings():
    """Stands in for pytest-django's fixture, which the root conftest's autouse fixture asks for; no Django here."""
    return SimpleNamespace()


@pytest.fixture
def key():
    name = f"test-{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(REDIS_URL).delete(f"ratelimit:{name}")


@pytest.fixture(params=["local", "redis"])
def make_bucket(request, key):
    def make(rate: float, burst: int) -> TokenBucket:
        client = redis.Redis.from_url(REDIS_URL) if request.param == "redis" else None
        return TokenBucket(key, rate, burst, redis_client=client)

    return make


def test_parse_rate():
    assert parse_rate("2/50") == (2.0, 50)
    assert parse_rate(" 0.5/3 ") == (0.5, 3)
    for bad in ("2", "0/5", "2/0", "x/y"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_burst_then_refill(make_bucket):
    bucket = make_bucket(rate=10, burst=5)
    assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5
    wait = bucket.try_acquire()
    assert 0.0 < wait <= 0.1
    assert bucket.state()["tokens"] < 1 and bucket.state()["burst"] == 5
    time.sleep(wait + 0.01)
    assert bucket.try_acquire() == 0.0
    time.sleep(0.35)
    assert 3 <= bucket.state()["tokens"] <= 5


def test_acquire_waits_for_a_token_or_gives_up(make_bucket):
    bucket = make_bucket(rate=5, burst=1)
    assert bucket.acquire(timeout=0.1)
    started = time.monotonic()
    assert bucket.acquire(timeout=1.0)  # one token refills in 0.2 s
    assert 0.1 <= time.monotonic() - started < 0.5
    started = time.monotonic()
    assert not bucket.acquire(timeout=0.15)  # the 0.2 s wait cannot fit: gives up without sleeping
    assert time.monotonic() - started < 0.1


def test_drain_empties_the_bucket_for_every_holder_then_it_refills(make_bucket):
    told, other = make_bucket(rate=10, burst=5), make_bucket(rate=10, burst=5)
    assert other.state()["tokens"] == 5
    told.drain()
    wait = other.try_acquire()
    assert 0.0 < wait <= 0.1  # the other holder of the same portal's bucket waits too
    time.sleep(0.25)
    assert other.try_acquire() == 0.0 and other.state()["tokens"] < 5


def test_redis_going_away_falls_back_to_the_in_process_bucket(key, caplog):
    """A Redis restart must only slow deliveries down: the bucket keeps counting in-process, it never raises."""
    gone = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    bucket = TokenBucket(key, rate=10, burst=2, redis_client=gone)
    assert [bucket.try_acquire() for _ in range(2)] == [0.0, 0.0]
    assert 0.0 < bucket.try_acquire() <= 0.1  # still a limit, not a free pass
    bucket.drain()
    assert bucket.state()["tokens"] < 1
    assert "Redis unavailable" in caplog.text


def test_more_than_burst_at_once_is_refused(make_bucket):
    with pytest.raises(ValueError):
        make_bucket(rate=1, burst=2).try_acquire(3)


def _hammer(key: str, rate: float, burst: int, seconds: float, threads: int = 4) -> tuple[int, float]:
    """threads workers, each with its own Redis connection and bucket object, acquire for `seconds`."""
    granted, lock, start = [0], threading.Lock(), threading.Barrier(threads)
    elapsed = [0.0]

    def worker() -> None:
        bucket = TokenBucket(key, rate, burst, redis_client=redis.Redis.from_url(REDIS_URL))
        start.wait()
        began = time.monotonic()
        while (now := time.monotonic()) - began < seconds:
            if bucket.acquire(timeout=seconds - (now - began)):
                with lock:
                    granted[0] += 1
        with lock:
            elapsed[0] = max(elapsed[0], time.monotonic() - began)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return granted[0], elapsed[0]


def test_one_budget_is_shared_by_four_threads_through_redis(key):
    granted, elapsed = _hammer(key, rate=20, burst=10, seconds=1.0)
    allowed = 10 + 20 * elapsed
    assert granted <= allowed + 1  # never more than the shared budget, whichever thread asks
    assert granted >= allowed * 0.6  # and the waiting threads do get the refilled tokens


def test_four_threads_cannot_exceed_the_burst_without_refill(key):
    granted = [0]
    lock = threading.Lock()

    def worker() -> None:
        bucket = TokenBucket(key, 0.01, 8, redis_client=redis.Redis.from_url(REDIS_URL))
        for _ in range(25):
            if bucket.try_acquire() == 0.0:
                with lock:
                    granted[0] += 1

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert granted[0] == 8
