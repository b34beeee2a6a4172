"""Holes the fuzz targets find on ``main`` that are being fixed on other branches (issue 13).

A finding whose kind is listed in :data:`OPEN_HOLES` is counted, not failed, by the short
runs in the suite and by ``python -m tests.fuzz`` (unless ``--strict``), so the fuzzers keep
looking for new ones. Each hole also has a regression input in ``regressions/<target>/``
named ``<kind>--...``, replayed by tests/test_fuzz.py as a strict xfail: once the fix is
merged that test XPASSes and fails the suite, which is the signal to delete the entry here.
"""

from __future__ import annotations

__all__ = ["OPEN_HOLES", "is_open"]

#: finding kind -> what it is and where it is being fixed
OPEN_HOLES: dict[str, str] = {
    "envelope-digits": (
        "an envelope offset of more than 4300 digits makes int() raise in open_envelope, "
        "inside PubSubProtocol.data_received: one PUBLISH kills the subscriber link "
        "(Redis reply reader hardening)"
    ),
    "envelope-position-refused": (
        "open_envelope accepts an epoch (any bytes) or offset that position_problem then "
        "refuses in a client's `since`: the client can never resume from a position the "
        "gateway sent it (open_envelope hardening)"
    ),
    "envelope-rewind": (
        "a forged envelope with a lower offset on the same epoch rewinds the channel's "
        "position and reaches clients out of order (open_envelope hardening)"
    ),
    "redis-reply-shape": (
        "a RESP reply of an unexpected shape (empty array, a non-bulk channel) raises out of "
        "PubSubProtocol.data_received instead of being refused (Redis reply reader hardening)"
    ),
    "http-duplicate-header-500": (
        "a duplicated header the gateway reads (Authorization, If-None-Match) answers 500 "
        "(HTTP/1.1 parser replacement)"
    ),
    "http-method-ignored": "POST, PUT, DELETE... are answered as GET (HTTP/1.1 parser replacement)",
    "http-pipelined-unanswered": (
        "a second request pipelined behind the first gets no answer (HTTP/1.1 parser replacement)"
    ),
}


def is_open(kind: str) -> bool:
    return kind in OPEN_HOLES
