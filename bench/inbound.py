"""Inbound webhook requests/s under gunicorn (2 sync workers): POST /bitrix/webhook with a valid token and a form
body vs a plain Django view returning 200 (bench/urls.py), same server, same load generator."""

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.report import Result

ROOT = Path(__file__).resolve().parent.parent
THREADS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(db_name: str):
    from bench.django_setup import bench_env

    port = _free_port()
    env = {**os.environ, **bench_env(db_name), "BENCH_EAGER": "0", "CONN_MAX_AGE": "60"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "app.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--timeout",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/bench/plain", timeout=1).status_code == 200:
                return proc, port
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"gunicorn did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")


def load(url: str, body_of, seconds: float, max_requests: int) -> dict:
    """THREADS threads, one requests.Session each, until `seconds` pass or `max_requests` were sent."""
    import requests

    counter = iter(range(max_requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def worker() -> tuple[int, int]:
        ok = bad = 0
        with requests.Session() as session:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                response = session.post(url, data=body_of(i), headers=headers, timeout=10)
                ok, bad = (ok + 1, bad) if response.status_code == 200 else (ok, bad + 1)
        return ok, bad

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        results = [f.result() for f in [pool.submit(worker) for _ in range(THREADS)]]
    elapsed = time.perf_counter() - started
    ok, bad = sum(r[0] for r in results), sum(r[1] for r in results)
    return {"ok": ok, "bad": bad, "seconds": elapsed, "rate": ok / elapsed}


def run(ctx) -> list[Result]:
    from django.db import connection

    from bench.django_setup import INBOUND_TOKEN

    seconds = ctx.size(2, 10)
    cap = ctx.size(2_000, 50_000)
    proc, port = _start(connection.settings_dict["NAME"])
    stamp = int(time.time())

    def event(i: int) -> str:
        return (
            f"event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D={i}&ts={stamp + i}&token={INBOUND_TOKEN}"
            f"&auth%5Bdomain%5D=portal.example.com"
        )

    try:
        base_url, hook_url = f"http://127.0.0.1:{port}/bench/plain", f"http://127.0.0.1:{port}/bitrix/webhook"
        load(base_url, event, 1, 500)  # warm-up both workers
        load(hook_url, lambda i: event(10_000_000 + i), 1, 500)
        base = load(base_url, event, seconds, cap)
        ours = load(hook_url, lambda i: event(20_000_000 + i), seconds, cap)
    finally:
        proc.terminate()
        proc.wait(10)
    ctx.detail(
        "inbound",
        f"gunicorn 2 sync workers, {THREADS} client threads (one requests.Session each), {seconds} s per side, "
        f"same machine (client and server share the 2 cores). Celery tasks go to the Redis broker (db 11, no worker).\n"
        f"- plain view: {base['ok']} × 200 ({base['bad']} other) in {base['seconds']:.1f} s.\n"
        f"- /bitrix/webhook: {ours['ok']} × 200 ({ours['bad']} other) in {ours['seconds']:.1f} s "
        "(each stores an InboundWebhook row, masks secrets, dedupes, enqueues processing).",
    )
    return [
        Result(
            metric="inbound webhook req/s (gunicorn ×2)",
            baseline=base["rate"],
            ours=ours["rate"],
            unit="req/s",
            target="≥ 0.5×",
            passed=ours["bad"] == 0 and ours["rate"] / base["rate"] >= 0.5,
            note=f"{ours['bad']} non-200 answers from the webhook view.",
        ),
    ]
