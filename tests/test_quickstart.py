"""The README's quick start, followed literally, against the embedded Redis of ``make run``.

The commands are read from README.md's code blocks, so the test breaks when the README
changes in a way a newcomer would trip over. The machine's own Redis holds 127.0.0.1:6379,
so everything runs in a private network namespace (``unshare -n``, root only) where port
6379 is free, as on a newcomer's machine; the README's next commands join it with
``nsenter``. Everything started is one process group, ended by its id.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.config import GatewaySettings
from tests.support.process import ROOT

TIMEOUT_S = 120.0  # make run checks the lock and the venv first
ANSWER_S = 15.0


def quick_start() -> tuple[list[tuple[str, str]], str]:
    """The quick start's code blocks, as (language, text), and what the client receives."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    received = re.search(r"The client receives\s+`([^`]+)`", section)
    assert received, "the quick start no longer says what the client receives"
    return blocks, received.group(1)


def _command(line: str) -> str:
    """A shell line without its trailing comment."""
    return re.sub(r"\s+#\s.*$", "", line).strip()


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_work() and not os.environ.get("CI"),
    reason="needs root for a private network namespace (unshare -n)",
)


class Namespace:
    """``make run`` in a network namespace of its own; commands run inside it."""

    def __init__(self) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GATEWAY_"))}
        self.make: asyncio.subprocess.Process | None = None

    async def start(self, command: str) -> asyncio.subprocess.Process:
        self.make = await asyncio.create_subprocess_exec(
            "unshare", "-n", "sh", "-c", f"ip link set lo up && exec {command}",
            cwd=ROOT, env=self.env, start_new_session=True,  # Ctrl-C reaches the whole group
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self.make

    async def spawn(self, line: str, **env: str) -> asyncio.subprocess.Process:
        assert self.make is not None
        return await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{self.make.pid}/ns/net", "sh", "-c", line,
            cwd=ROOT, env={**self.env, **env}, start_new_session=True,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def run(self, line: str, stdin: bytes = b"", **env: str) -> str:
        process = await self.spawn(line, **env)
        out, err = await process.communicate(stdin)
        assert process.returncode == 0, (line, out, err)
        return out.decode()

    async def interrupt(self) -> int:
        """Ctrl-C, as the person at the terminal of ``make run`` would."""
        assert self.make is not None
        os.killpg(self.make.pid, signal.SIGINT)
        return await self.make.wait()

    def kill(self, process: asyncio.subprocess.Process | None) -> None:
        if process is not None and process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)


async def _line_with(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    while needle not in (line := await stream.readline()):
        assert line, f"stream ended before {needle!r}"
    return line


async def _frames(stream: asyncio.StreamReader, count: int) -> AsyncIterator[dict[str, Any]]:
    """JSON frames printed by ``python -m websockets`` as ``< {...}`` (among terminal codes)."""
    seen = 0
    while seen < count:
        line = await stream.readline()
        assert line, "the websockets client ended early"
        for frame in re.findall(rb"< (\{.*\})", line):
            seen += 1
            yield orjson.loads(frame)


async def test_the_readme_quick_start_works_as_written() -> None:
    blocks, received = quick_start()
    (
        (lang0, serve),
        (lang1, connect),
        (_, answers),
        (lang3, publish),
        (lang4, python),
        (
            lang5,
            cli,
        ),
    ) = blocks
    assert (lang0, lang1, lang3, lang4, lang5) == ("sh", "sh", "sh", "python", "sh")
    space = Namespace()
    client = listener = None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            make = await space.start(_command(serve))
            assert make.stderr is not None
            greeting = await _line_with(make.stderr, b"listening on")
        assert b"ws://127.0.0.1:8765/ws" in greeting

        async with asyncio.timeout(ANSWER_S * 4):
            # Second block: store the session, connect, type the frames.
            store, websocket_client, *typed = connect.strip().splitlines()
            assert (await space.run(_command(store))).strip() == "OK"
            client = await space.spawn(_command(websocket_client))
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write("".join(f"{frame}\n" for frame in typed).encode())
            await client.stdin.drain()
            expected = [orjson.loads(line.removeprefix("< ")) for line in answers.splitlines()]
            got = [frame async for frame in _frames(client.stdout, len(expected))]
            assert [f["type"] for f in got] == [f["type"] for f in expected]
            assert {**got[0], "conn": "?"} == {**expected[0], "conn": "?"}
            assert got[1] == expected[1]

            # Third block: publish; the client prints exactly what the README says.
            await space.run(_command(publish.strip()))
            message = [frame async for frame in _frames(client.stdout, 1)]
            assert message == [orjson.loads(received)]

            # The Python library, with no setting, finds the private Redis.
            await space.run(".venv/bin/python -", stdin=python.encode())
            (from_python,) = [frame async for frame in _frames(client.stdout, 1)]
            assert from_python["data"] == {"type": "new_message", "userId": "123"}

            # The command line: create, listen (a terminal of its own), publish, revoke.
            activate, create, listen, send, revoke = map(_command, cli.strip().splitlines())
            token = (await space.run(f"{activate} && {create} && echo $TOKEN")).split()[-1]
            listener = await space.spawn(f"{activate} && {listen}", TOKEN=token)
            assert listener.stderr is not None
            assert listener.stdout is not None
            await _line_with(listener.stderr, b"listening to user:42")
            assert (await space.run(f"{activate} && {send}", TOKEN=token)).strip() == "1"
            line = await listener.stdout.readline()
            assert orjson.loads(line)["data"] == {"message": "Hello!"}
            await space.run(f"{activate} && {revoke}", TOKEN=token)
            assert await listener.wait() == 1
            assert b"closed with 4001" in await listener.stderr.read()
            client.stdin.close()
            await client.wait()

        async with asyncio.timeout(ANSWER_S):
            await space.interrupt()
            assert make.stdout is not None
            log = await make.stdout.read()
        events = [orjson.loads(line)["event"] for line in log.splitlines() if line[:1] == b"{"]
        assert "embedded_redis_started" in events
        assert events[-2:] == ["gateway_stopped", "embedded_redis_stopped"]
    finally:
        for process in (client, listener, space.make):
            space.kill(process)


def test_the_quick_start_states_the_auth_deadline_in_force() -> None:
    section = (ROOT / "README.md").read_text().split("\n## Quick start", 1)[1]
    seconds = re.search(r"within (\d+) seconds of connecting \(`GATEWAY_AUTH_TIMEOUT`\)", section)
    assert seconds
    assert float(seconds.group(1)) == GatewaySettings().auth_timeout_s
