"""The n8n receiver in a process of its own, as a real n8n is: its request handling does not share the GIL of the
side being measured. `python -m bench.receiver` prints its URL and serves until stdin closes."""

import subprocess
import sys
import time

import requests


class ReceiverProcess:
    def __init__(self) -> None:
        self._session = requests.Session()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("the receiver process did not start")
        self._summary = self.url.rsplit("/webhook", 1)[0] + "/sandbox/events?summary=1"

    def counts(self) -> dict[str, int]:
        return self._session.get(self._summary, timeout=5).json()

    def accepted(self, received: int, timeout: float) -> int:
        """Wait for `received` requests; how many of those the receiver answered 2xx."""
        counts = self.wait_for(received, timeout)
        return counts["unique"] + counts["duplicates"]

    def wait_for(self, received: int, timeout: float) -> dict[str, int]:
        """Poll the counts every 20 ms until `received` requests arrived (or time is up); returns the last counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if counts["received"] >= received or time.monotonic() >= deadline:
                return counts
            time.sleep(0.02)

    def stop(self) -> None:
        self._session.close()
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)


def main() -> None:
    from integrations.sandbox.n8n import N8nReceiver

    receiver = N8nReceiver().start()  # no secret: it does not verify, so both sides pay the same receiver cost
    print(receiver.url, flush=True)
    sys.stdin.read()  # until the parent closes stdin (or dies)
    receiver.stop()


if __name__ == "__main__":
    main()
