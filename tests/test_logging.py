"""docs/logging.md matches the code; secrets are redacted; every stdout line is JSON."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import random
import re
import signal
import subprocess
import sys
import textwrap

import orjson
import pytest

from gateway.ops.log import _SCRUBBERS, LIBRARY_EVENT, redact_secrets
from tests.support.process import ROOT, GatewayProcess
from tests.support.redis_server import RedisServer
from tests.support.regex_steps import StepCounter
from tests.support.ws import http_fetch

LEVELS = ("debug", "info", "warning", "error", "critical", "exception")
SOURCES = ("gateway", "clients")
DOC = ROOT / "docs" / "logging.md"


@dataclasses.dataclass(frozen=True)
class Emitted:
    event: str
    level: str
    fields: frozenset[str]
    where: str


def _is_logger(receiver: ast.expr) -> bool:
    """``log``, ``bound``, ``self._log``, ``log.bind(...)``: structlog loggers by convention."""
    text = ast.unparse(receiver)
    return bool(re.fullmatch(r"(self\._?)?(log|logger|bound)", text)) or ".bind(" in text


def emitted_events() -> list[Emitted]:
    """Every ``<logger>.<level>("event", field=...)`` call in the shipped packages."""
    found = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and _is_logger(node.func.value)
                ):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{where}: event name not a literal"
                assert isinstance(first.value, str), f"{where}: event name not a string"
                fields = frozenset(k.arg for k in node.keywords if k.arg is not None)
                found.append(Emitted(first.value, node.func.attr, fields, where))
    return found


@dataclasses.dataclass(frozen=True)
class Documented:
    levels: frozenset[str]
    fields: frozenset[str]


def documented_events() -> dict[str, Documented]:
    """Rows under "## Events": | `event` | level[, level] | `field`, ... | meaning |."""
    table: dict[str, Documented] = {}
    section = DOC.read_text().split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            continue
        event = cells[0].strip("`")
        assert event not in table, f"{event} is documented twice"
        table[event] = Documented(
            frozenset(level.strip() for level in cells[1].split(",")),
            frozenset(re.findall(r"`([a-z0-9_]+)`", cells[2])),
        )
    return table


def test_the_scan_finds_the_events_it_should() -> None:
    # Guards the test below against a scanner that silently finds nothing.
    names = {e.event for e in emitted_events()}
    assert {"gateway_started", "auth_failed", "slow_consumer", "admin_unauthorized"} <= names


def test_every_emitted_event_is_documented_with_its_level_and_fields() -> None:
    documented = documented_events()
    problems = []
    for emitted in emitted_events():
        if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", emitted.event):
            problems.append(f"{emitted.where}: {emitted.event!r} is not snake_case")
        doc = documented.get(emitted.event)
        if doc is None:
            problems.append(f"{emitted.where}: {emitted.event} is missing from docs/logging.md")
            continue
        if emitted.level not in doc.levels:
            problems.append(
                f"{emitted.where}: {emitted.event} is logged at {emitted.level}, "
                f"documented as {sorted(doc.levels)}"
            )
        if undocumented := emitted.fields - doc.fields:
            problems.append(f"{emitted.where}: {emitted.event} fields {sorted(undocumented)}")
    assert not problems, "\n".join(problems)


def test_nothing_documented_is_stale() -> None:
    emitted: dict[str, set[str]] = {}
    for e in emitted_events():
        emitted.setdefault(e.event, set()).add(e.level)
    emitted[LIBRARY_EVENT] = {"debug", "info", "warning", "error", "critical"}
    for event, doc in documented_events().items():
        assert event in emitted, f"docs/logging.md lists {event}, which nothing logs"
        assert doc.levels <= emitted[event], f"{event}: documented levels {sorted(doc.levels)}"


SECRET = "tok_3f9a8b7c6d5e4f30"


@pytest.mark.parametrize(
    ("fields", "hidden"),
    [
        ({"token": SECRET}, SECRET),
        ({"session_token": SECRET}, SECRET),
        ({"admin_token": SECRET}, SECRET),
        ({"GATEWAY_ADMIN_TOKEN": SECRET}, SECRET),
        ({"password": "hunter2hunter2"}, "hunter2hunter2"),
        ({"redis": "redis://:hunter2@cache:6379/0"}, "hunter2"),
        ({"redis": "rediss://app:p%40ss/w0rd@cache:6379"}, "p%40ss/w0rd"),
        ({"error": "Error connecting to redis://default:s3cr3t@10.0.0.1:6379"}, "s3cr3t"),
        ({"header": f"Authorization: Bearer {SECRET}"}, SECRET),
        ({"message": f"got bearer {SECRET} from client"}, SECRET),
        ({"header": "Authorization: Basic dXNlcjpwYXNzd29yZA=="}, "dXNlcjpwYXNzd29yZA=="),
        ({"path": f"/ws?channel=x&token={SECRET}"}, SECRET),
        ({"frame": f'{{"type": "auth", "token": "{SECRET}"}}'}, SECRET),
        ({"headers": {"Authorization": f"Bearer {SECRET}"}}, SECRET),
        ({"args": [f"redis://u:{SECRET}@h/0"]}, SECRET),
        ({"event": f"exception text with password={SECRET}"}, SECRET),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_redaction_hides_secrets(fields: dict[str, object], hidden: str) -> None:
    out = redact_secrets(None, "info", {"event": "x", **fields})
    rendered = orjson.dumps(dict(out)).decode()
    assert hidden not in rendered
    assert "***" in rendered


def test_redaction_keeps_ordinary_fields() -> None:
    fields = {
        "event": "auth_failed",
        "reason": "bad_authorization_header",
        "redis": "redis://cache:6379/0",
        "remote": "127.0.0.1:5000",
        "channel": "user:42",
        "connections": 3,
    }
    assert redact_secrets(None, "info", dict(fields)) == fields


def _run_python(code: str) -> list[dict[str, object]]:
    """Run ``code`` in a child interpreter; every stdout line must be one JSON object."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stderr == b"", result.stderr.decode()
    lines = result.stdout.splitlines()
    assert lines
    return [orjson.loads(line) for line in lines]


def test_library_records_become_json_events_on_stdout() -> None:
    records = _run_python(
        """
        import asyncio, logging, warnings
        import structlog
        from gateway.ops.log import configure_logging

        configure_logging("info", "json")
        structlog.get_logger("t").info("gateway_started", redis="redis://:pw123456@h:1/0")
        logging.getLogger("websockets.server").info("connection open")  # below WARNING: dropped
        logging.getLogger("websockets.server").warning("bad header Authorization: Bearer abc123")
        warnings.warn("old api", DeprecationWarning)

        async def main():
            asyncio.get_running_loop().call_soon(lambda: 1 / 0)
            await asyncio.sleep(0.05)

        asyncio.run(main())
        """
    )
    assert [r["event"] for r in records] == ["gateway_started"] + [LIBRARY_EVENT] * 3
    for record in records:
        assert {"event", "level", "timestamp"} <= record.keys()
    started, websockets_record, warning, callback = records
    assert started["redis"] == "redis://:***@h:1/0"
    assert websockets_record["logger"] == "websockets.server"
    assert websockets_record["level"] == "warning"
    assert websockets_record["message"] == "bad header Authorization: ***"
    assert warning["logger"] == "py.warnings"
    assert "old api" in str(warning["message"])
    assert callback["logger"] == "asyncio"
    assert callback["level"] == "error"
    assert str(callback["message"]).startswith("Exception in callback")
    assert "ZeroDivisionError" in str(callback["exception"])


def test_log_level_filters_our_events_and_library_records() -> None:
    records = _run_python(
        """
        import logging
        import structlog
        from gateway.ops.log import configure_logging

        configure_logging("warning", "json")
        structlog.get_logger("t").info("gateway_started")
        structlog.get_logger("t").warning("redis_disconnected")
        logging.getLogger("redis").info("chatty")
        logging.getLogger("redis").error("loud")
        """
    )
    assert [(r["event"], r["level"]) for r in records] == [
        ("redis_disconnected", "warning"),
        (LIBRARY_EVENT, "error"),
    ]


async def test_admin_token_never_reaches_the_log(redis_server: RedisServer) -> None:
    admin = "adm1n-t0ken-f3a9c2e7d4b8a1c6"
    gateway = GatewayProcess({"REDIS_URL": redis_server.url, "GATEWAY_ADMIN_TOKEN": admin})
    try:
        port = await asyncio.to_thread(gateway.wait_started)
        base = f"http://127.0.0.1:{port}"
        wrong = admin[::-1]
        for headers, expected in (
            ({}, 401),
            ({"Authorization": f"Bearer {wrong}"}, 401),
            ({"Authorization": f"Bearer {admin}"}, 200),
        ):
            assert (await http_fetch(f"{base}/metrics", headers))[0] == expected
        gateway.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gateway.wait) == 0
        records = gateway.records()  # every stdout line is one JSON object
        refused = [r for r in records if r["event"] == "admin_unauthorized"]
        assert [(r["path"], r["reason"]) for r in refused] == [
            ("/metrics", "missing"),
            ("/metrics", "invalid"),
        ]
        output = gateway.output() + gateway.stderr()
        assert admin not in output
        assert wrong not in output
    finally:
        gateway.stop()


# -- linear-time redaction --------------------------------------------------------

#: the URL pattern before issue 13.8: 1.78 s on a 20,000-character string
QUADRATIC_URL = re.compile(r"(?P<lead>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)", re.I)

#: texts that make a backtracking pattern rescan: runs of what its parts accept
ADVERSARIAL_UNITS = (
    "a",
    "a-",
    "a://b:",
    "x://u:p/",
    "://",
    "token",
    "-token",
    "tokentoken=",
    '"token',
    '"token" : "',
    '"',
    "authorization ",
    "authorization:",
    "bearer ",
    "a=",
    "a:@",
)
FRAGMENTS = ("a", "-", "://", ":", "@", " ", "token", "=", '"', "bearer", "authorization", "/")


def _texts(size: int) -> list[str]:
    """Each adversarial unit repeated to ``size``, and random mixes of fragments repeated:
    the text of 8 * size is the text of size, 8 times over."""
    texts = [(unit * (size // len(unit) + 1))[:size] for unit in ADVERSARIAL_UNITS]
    rng = random.Random(13)
    for _ in range(2):
        block = "".join(rng.choice(FRAGMENTS) for _ in range(40))[:40]
        texts.append(block * (size // 40))
    return texts


def _steps(pattern: re.Pattern[str], text: str) -> int:
    counter = StepCounter(pattern)
    spans = counter.sub_spans(text)
    # The model finds what the real engine finds, so its count is the count of this search.
    assert spans == [m.span() for m in pattern.finditer(text)], (pattern.pattern, text[:40])
    return counter.steps


def test_the_step_counter_sees_quadratic_work() -> None:
    # Guards the test below: the pattern of issue 13.8 does 8x8 the work on 8x the text.
    small, large = _steps(QUADRATIC_URL, "a" * 60), _steps(QUADRATIC_URL, "a" * 480)
    assert large > 40 * small


@pytest.mark.parametrize("number", range(len(_SCRUBBERS)))
def test_redaction_work_grows_linearly_with_the_text(number: int) -> None:
    pattern = _SCRUBBERS[number]
    for small, large in zip(_texts(200), _texts(1600), strict=True):
        ratio = _steps(pattern, large) / _steps(pattern, small)
        assert ratio < 10, (pattern.pattern, small[:24], ratio)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        # a password longer than the look-ahead for its @ is masked all the same
        (f"redis://app:{'p' * 600}@cache:6379", "p" * 20),
        (f"{'x' * 30_000} token={SECRET}", SECRET),
        (f"redis://:{SECRET}@h:1 " * 2_000, SECRET),
    ],
    ids=["long-password", "long-prefix", "many-urls"],
)
def test_redaction_of_long_text_still_masks(text: str, hidden: str) -> None:
    out = redact_secrets(None, "info", {"event": "x", "error": text})
    assert hidden not in out["error"]


def test_redaction_keeps_ordinary_urls_and_long_user_ids() -> None:
    user = "u" * 30_000
    fields = {"event": "x", "user": user, "url": "http://example.com:8080/path?q=1"}
    assert redact_secrets(None, "info", dict(fields)) == fields


@pytest.mark.parametrize(("fmt", "json_lines"), [("auto", True), ("console", False)])
def test_logs_into_a_pipe_have_no_colour_codes(fmt: str, json_lines: bool) -> None:
    code = f"""
        import structlog
        from gateway.ops.log import configure_logging

        configure_logging("info", {fmt!r})
        structlog.get_logger("t").warning("redis_disconnected", reason="x")
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b"\x1b[" not in result.stdout
    assert b"redis_disconnected" in result.stdout
    is_json = result.stdout.startswith(b"{")
    assert is_json is json_lines
