"""One owner per vocabulary: close codes, close reasons, error codes and the reconnect backoff
live in notify_wire; the browser client, the docs and the CLI must say the same."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from gateway.cli.listen import describe_close
from notify_wire.backoff import BROWSER_RECONNECT
from notify_wire.codes import CLOSE_CODES, ERROR_CODES, CloseCode, CloseReason, ErrorCode
from tests.support.process import ROOT

JS_CLIENT = ROOT / "clients" / "js" / "notify-client.js"


def _node_eval(expression: str) -> object:
    """``expression`` evaluated by Node.js with the browser client imported as ``client``."""
    node = shutil.which("node")
    assert node, "node is needed to read the browser client's tables"
    script = f"import * as client from {json.dumps(JS_CLIENT.as_uri())};\n"
    script += f"process.stdout.write(JSON.stringify({expression}));\n"
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout)


def _table(markdown: str, heading: str) -> list[list[str]]:
    """The rows of the first table under ``heading`` in a markdown text, cells stripped."""
    section = markdown.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_every_close_code_has_a_row_and_every_reason_a_known_code() -> None:
    assert set(CLOSE_CODES) == {int(code) for code in CloseCode}
    for reason in CloseReason:
        assert reason.code in CLOSE_CODES
        # RFC 6455 5.5.1: a close frame's reason is at most 123 bytes.
        text = reason.text_with(rate=1e9) if reason is CloseReason.FRAME_RATE else reason.text
        assert len(text.encode()) <= 123, reason


def test_the_browser_client_follows_the_close_code_table() -> None:
    table = _node_eval("client.CLOSE_CODES")
    assert isinstance(table, dict)
    expected = {
        str(int(info.code)): {"name": info.code.name, "reconnect": info.reconnect.value}
        for info in CLOSE_CODES.values()
    }
    assert table == expected


def test_the_browser_client_backs_off_as_the_policy_says() -> None:
    defaults = _node_eval("client.DEFAULTS")
    assert isinstance(defaults, dict)
    policy = BROWSER_RECONNECT
    assert defaults["minDelayMs"] == policy.min_s * 1000
    assert defaults["initialDelayMs"] == policy.initial_s * 1000
    assert defaults["maxDelayMs"] == policy.cap_s * 1000
    assert defaults["stableAfterMs"] == policy.stable_after_s * 1000
    # The rule itself: uniform in [min, min(max, initial * 2^attempt)].
    source = JS_CLIENT.read_text()
    assert "Math.min(maxDelayMs, initialDelayMs * 2 ** this.#attempt)" in source
    assert "minDelayMs + Math.random() * (ceiling - minDelayMs)" in source


def test_docs_protocol_lists_each_close_code_with_its_policy_and_reasons() -> None:
    rows = _table((ROOT / "docs" / "protocol.md").read_text(), "## Close codes")
    documented = {int(row[0]): row for row in rows}
    assert set(documented) == set(CLOSE_CODES)
    for code, info in CLOSE_CODES.items():
        _, name, reconnect, _meaning, reasons = documented[code]
        assert (name, reconnect) == (info.code.name, info.reconnect.value), code
        sent = {r.text for r in CloseReason if r.code == code}
        listed = set(re.findall(r"`([^`]+)`", reasons))
        assert sent <= listed, (code, sent - listed)
        assert listed - sent <= {"GATEWAY_MAX_FRAME_BYTES"}, (code, listed - sent)


def test_docs_protocol_lists_each_error_code() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, re.M)) & {c.value for c in ErrorCode}
    assert documented == {c.value for c in ErrorCode}
    assert set(ERROR_CODES) == set(ErrorCode)


@pytest.mark.parametrize("code", sorted(CLOSE_CODES))
def test_the_listen_command_explains_each_close_code(code: int) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.frames import Close

    line = describe_close(ConnectionClosed(Close(code, "why"), None))
    assert CLOSE_CODES[code].meaning in line
