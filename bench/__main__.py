"""python -m bench [--smoke] [--only NAME ...]: every metric with its baseline, a table, docs/benchmarks.md."""

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = [
    *("save", "broker", "bitrix", "n8n", "latency", "retention", "claim", "inbound"),
    *("catchup", "backfill", "scrape", "backlog"),
]


class Context:
    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.details: list[str] = []

    def size(self, smoke, full):
        return smoke if self.smoke else full

    def detail(self, title: str, text: str) -> None:
        self.details.append(f"### {title}\n\n{text.rstrip()}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes; writes bench/out/ not docs/")
    parser.add_argument("--only", action="append", choices=METRICS, help="run only this metric (repeatable)")
    parser.add_argument("--out", help="markdown output path (default: docs/benchmarks.md, or bench/out/ with --smoke)")
    parser.add_argument("--db", help="database name (default bench, or bench_smoke with --smoke)")
    args = parser.parse_args(argv)

    from bench import django_setup

    started = time.monotonic()
    django_setup.setup(args.db or ("bench_smoke" if args.smoke else "bench"), fresh=args.smoke)
    from bench import report

    ctx = Context(args.smoke)
    results = []
    for name in args.only or METRICS:
        t0 = time.monotonic()
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{name}")
        try:
            django_setup.reset()
            results.extend(module.run(ctx))
        except Exception as exc:  # noqa: BLE001 - one broken metric must not hide the others
            traceback.print_exc()
            results.append(
                report.Result(metric=name, ours=None, unit="error", target="—", passed=False, note=f"crashed: {exc!r}")
            )
        finally:
            django_setup.reset()
        print(f"[bench] {name} done in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    print(report.table(results))
    out = (
        Path(args.out)
        if args.out
        else (ROOT / "bench/out/benchmarks.md" if args.smoke else ROOT / "docs/benchmarks.md")
    )
    report.write(results, smoke=args.smoke, path=out, details="\n".join(ctx.details), elapsed=elapsed)
    json_out = (
        out.with_suffix(".json") if args.out else ROOT / "bench/out" / ("smoke.json" if args.smoke else "full.json")
    )
    report.dump_json(results, json_out)
    print(f"written: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
