"""Run the sandbox portal in the foreground: python -m integrations.sandbox.bitrix24 --port 8765 --code devcode."""

import argparse
import threading

from .sandbox import BitrixSandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--user-id", type=int, default=1)
    parser.add_argument("--code", default=None, help="webhook code (random when omitted)")
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--no-rate-limit", action="store_true")
    parser.add_argument("--event-handler-url", default=None)
    args = parser.parse_args()
    sandbox = BitrixSandbox(
        port=args.port,
        user_id=args.user_id,
        code=args.code,
        rate=args.rate,
        burst=args.burst,
        enforce_rate_limit=not args.no_rate_limit,
        event_handler_url=args.event_handler_url,
    ).start()
    # Printed once on purpose: this is a local test portal and the operator needs the URL to configure it.
    print(f"Bitrix24 sandbox webhook: {sandbox.webhook_url}", flush=True)
    print(f"application_token: {sandbox.application_token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sandbox.stop()


if __name__ == "__main__":
    main()
