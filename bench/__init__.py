"""Benchmarks: `python -m bench` (full, writes docs/benchmarks.md) or `python -m bench --smoke` (small, bench/out/)."""
