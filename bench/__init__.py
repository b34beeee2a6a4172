"""Benchmark suite: the gateway against a naive baseline, measured side by side.

Run with ``make bench`` (or ``python -m bench``); see docs/benchmarks.md.
"""
