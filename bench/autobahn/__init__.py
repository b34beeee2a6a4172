"""RFC 6455 compliance of the gateway's raw write path, checked with Autobahn|Testsuite.

``python -m bench.autobahn`` runs the suite's fuzzing client against :mod:`.echo`;
see docs/benchmarks.md, "Protocol compliance".
"""
