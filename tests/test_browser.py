"""The browser client and demo page in a real headless Chromium, against real gateways and Redis.

Chromium is Debian's (`scripts/system-deps.sh chromium`), driven by Playwright's synchronous
API, so these tests are plain functions; the gateways run as child processes.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import signal
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, WebSocket, sync_playwright
from redis import Redis

from gateway.edge.assets import DEMO_CSP
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.history import ENVELOPE_PREFIX, HistoryKeys
from notify_wire.sessions import session_digest
from tests.support.history import PREFIX, publish_with_history_sync
from tests.support.process import ROOT, GatewayProcess
from tests.support.redis_server import RedisServer, free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import new_token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh chromium (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def sync_redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gateway_process(redis_server: RedisServer) -> Iterator[GatewayProcess]:
    process = GatewayProcess({"REDIS_URL": redis_server.url})
    process.wait_started()
    yield process
    process.stop()


class RestartingGateway:
    """Gateway processes on one fixed port, one at a time, so a page's URL survives a restart."""

    def __init__(self, redis_url: str) -> None:
        self._env = {"REDIS_URL": redis_url, "GATEWAY_PORT": str(free_port())}
        self._processes: list[GatewayProcess] = []

    @property
    def current(self) -> GatewayProcess:
        return self._processes[-1]

    def start(self) -> GatewayProcess:
        self._processes.append(GatewayProcess(self._env))
        self.current.wait_started()
        return self.current

    def terminate(self) -> None:
        """SIGTERM (clients get 1001) and a clean exit."""
        self.current.process.send_signal(signal.SIGTERM)
        assert self.current.wait() == 0

    def stop(self) -> None:
        for process in self._processes:
            process.stop()


@pytest.fixture
def restarting_gateway(redis_server: RedisServer) -> Iterator[RestartingGateway]:
    gateway = RestartingGateway(redis_server.url)
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()


@dataclasses.dataclass
class Tab:
    """A page plus what it did: uncaught errors, console errors, WebSocket URLs and frames."""

    page: Page
    errors: list[str] = dataclasses.field(default_factory=list)
    console_errors: list[str] = dataclasses.field(default_factory=list)
    sockets: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)

    def record_socket(self, ws: WebSocket) -> None:
        frames: list[str] = []
        self.sockets.append((ws.url, frames))
        ws.on("framesent", lambda payload: frames.append(str(payload)))

    def record_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1200, "height": 720})
    context.set_default_timeout(WAIT_MS)
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.page.on("console", tab.record_console)
    tab.page.on("websocket", tab.record_socket)
    yield tab
    context.close()
    assert tab.errors == [], "uncaught exceptions in the page"


def new_session(redis: Redis, user_id: str = "42") -> str:
    token = new_token()
    redis.set(f"session:{token}", orjson.dumps({"userId": user_id}), ex=120)
    return token


def unique_channel() -> str:
    return f"public:browser-{secrets.token_hex(4)}"  # readable by every session


def base_url(process: GatewayProcess) -> str:
    return f"http://127.0.0.1:{process.port}"


# -- the demo page ----------------------------------------------------------------------------


def connect_demo(page: Page, token: str, channels: str) -> None:
    page.fill("#token", token)
    page.fill("#channels", channels)
    page.click("#connect")


def wait_channel(page: Page, channel: str, status: str) -> None:
    page.wait_for_function(
        """([channel, status]) =>
            document.querySelector(`#channel-list li[data-channel="${channel}"]`)
                ?.dataset.status === status""",
        arg=[channel, status],
    )


def wait_messages(page: Page, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelector('#count').textContent === String(n)", arg=count
    )


def wait_state(page: Page, state: str) -> None:
    page.wait_for_function("s => document.querySelector('#state').dataset.state === s", arg=state)


def test_demo_page_shows_a_published_message_as_text(
    tab: Tab, gateway_process: GatewayProcess, sync_redis: Redis
) -> None:
    page = tab.page
    response = page.goto(base_url(gateway_process) + "/")
    assert response is not None
    assert response.status == 200
    assert response.headers["content-security-policy"] == DEMO_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    channel = unique_channel()
    connect_demo(page, new_session(sync_redis), channel)
    wait_channel(page, channel, "subscribed")
    assert page.text_content("#state") == "open"
    data = {"type": "new_message", "message": "<b>Hello!</b> ünïcode"}
    assert sync_redis.publish(channel, orjson.dumps(data)) == 1
    wait_messages(page, 1)
    shown = page.text_content("#messages li:first-child") or ""
    assert channel in shown
    assert orjson.loads(shown[shown.index("{") :]) == data
    assert page.locator("#messages b").count() == 0  # published data is text, never markup
    assert page.locator("#messages .offset").count() == 0
    _, _, epoch = publish(sync_redis, channel, 2)  # with history: the page shows the offset
    wait_messages(page, 2)
    offset = page.locator("#messages li:first-child .offset")
    assert offset.text_content() == "#1"
    assert offset.get_attribute("title") == f"epoch {epoch}"
    # The page, its script and style and the client all load under its CSP.
    assert tab.console_errors == []


def test_static_files_have_types_and_revalidate(tab: Tab, gateway_process: GatewayProcess) -> None:
    request = tab.page.request
    client = request.get(base_url(gateway_process) + "/client.js")
    assert client.status == 200
    assert client.headers["content-type"] == "text/javascript; charset=utf-8"
    assert client.headers["x-content-type-options"] == "nosniff"
    assert client.body() == (ROOT / "clients" / "js" / "notify-client.js").read_bytes()
    etag = client.headers["etag"]
    again = request.get(base_url(gateway_process) + "/client.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.body() == b""
    for path, content_type in (("/demo.js", "text/javascript"), ("/demo.css", "text/css")):
        response = request.get(base_url(gateway_process) + path)
        assert response.status == 200
        assert response.headers["content-type"] == f"{content_type}; charset=utf-8"


def test_demo_page_reconnects_and_resubscribes_after_a_gateway_restart(
    tab: Tab, restarting_gateway: RestartingGateway, sync_redis: Redis
) -> None:
    page = tab.page
    page.goto(base_url(restarting_gateway.current) + "/")
    channel = unique_channel()
    token = new_session(sync_redis)
    connect_demo(page, token, channel)
    wait_channel(page, channel, "subscribed")
    sync_redis.publish(channel, orjson.dumps({"n": 1}))
    wait_messages(page, 1)

    restarting_gateway.terminate()
    wait_state(page, "reconnecting")
    restarting_gateway.start()

    wait_channel(page, channel, "subscribed")
    assert sync_redis.publish(channel, orjson.dumps({"n": 2})) == 1
    wait_messages(page, 2)
    assert '"n": 2' in (page.text_content("#messages li:first-child") or "")
    events = page.text_content("#events") or ""
    assert "closed 1001" in events
    assert "reconnected as user 42" in events
    assert f"gap on {channel} (reconnect)" in events
    assert len(tab.sockets) >= 2
    assert all(token not in url for url, _ in tab.sockets)


def test_revoked_session_stops_the_page_reconnecting(
    tab: Tab, gateway_process: GatewayProcess, sync_redis: Redis
) -> None:
    page = tab.page
    page.clock.install()  # real time flows; run_for() below jumps ahead
    page.add_init_script(
        """{
            const Native = WebSocket;
            window.socketsOpened = 0;
            window.WebSocket = class extends Native {
                constructor(...args) { super(...args); window.socketsOpened += 1; }
            };
        }"""
    )
    page.goto(base_url(gateway_process) + "/")
    token = new_session(sync_redis)
    channel = unique_channel()
    connect_demo(page, token, channel)
    wait_channel(page, channel, "subscribed")

    sync_redis.delete(f"session:{token}")
    sync_redis.publish(CONTROL_CHANNEL, revoke_message(session_digest(token)))
    wait_state(page, "closed")
    assert "unauthorized" in (page.text_content("#notice") or "")
    assert page.is_visible("#notice")
    assert "closed 4001 (session revoked)" in (page.text_content("#events") or "")
    assert page.get_attribute(f'#channel-list li[data-channel="{channel}"]', "data-status") == (
        "stopped"
    )
    # Longer than the 30 s backoff cap: any retry timer would have fired and opened a socket.
    page.clock.run_for(60_000)
    assert page.evaluate("window.socketsOpened") == 1
    assert page.text_content("#state") == "closed"


# -- the client module on its own ---------------------------------------------------------------


def start_client(page: Page, url: str, token: str, options: dict[str, Any] | None = None) -> None:
    """Create ``window.client`` from /client.js; ``window.events`` records every event."""
    page.evaluate(
        """async ([url, token, options]) => {
            const { NotifyClient } = await import("/client.js");
            window.events = [];
            window.received = [];
            window.client = new NotifyClient(url, { token, ...options });
            const types = ["open", "close", "state", "gap", "subscribed", "error", "unauthorized"];
            for (const type of types) {
                window.client.on(type, (detail) => window.events.push({ type, ...detail }));
            }
        }""",
        [url, token, options or {}],
    )


def test_subscribe_rejects_on_a_forbidden_channel_and_the_connection_stays_usable(
    tab: Tab, gateway_process: GatewayProcess, sync_redis: Redis
) -> None:
    page = tab.page
    page.goto(base_url(gateway_process) + "/healthz")  # any page of the gateway's origin
    start_client(page, gateway_process.ws_url, new_session(sync_redis, "42"))
    result = page.evaluate(
        """async () => {
            const refused = await window.client.subscribe("user:43", () => {}).then(
                () => null,
                (error) => ({ name: error.name, code: error.code, channel: error.channel }),
            );
            await window.client.subscribe("user:42", (data) => window.received.push(data));
            return { refused, channels: window.client.channels, state: window.client.state };
        }"""
    )
    assert result == {
        "refused": {"name": "NotifyError", "code": "forbidden", "channel": "user:43"},
        "channels": ["user:42"],
        "state": "open",
    }
    sync_redis.publish("user:42", orjson.dumps({"ok": True}))
    page.wait_for_function("window.received.length === 1")
    assert page.evaluate("window.received") == [{"ok": True}]


def test_ping_detects_a_dead_link_and_the_client_reconnects_with_auth_frames(
    tab: Tab, gateway_process: GatewayProcess, sync_redis: Redis
) -> None:
    page = tab.page
    proxy = TcpProxy(gateway_process.port)
    try:
        page.goto(base_url(gateway_process) + "/healthz")
        token = new_session(sync_redis)
        channel = unique_channel()
        start_client(
            page,
            f"ws://127.0.0.1:{proxy.port}/ws",
            token,
            {"pingIntervalMs": 200, "pingTimeoutMs": 400},
        )
        page.evaluate(
            "c => window.client.subscribe(c, (data) => window.received.push(data))", channel
        )
        proxy.freeze()  # the socket stays open but nothing gets through any more
        page.wait_for_function(
            """c => window.events.some((e) => e.type === "gap" && e.channel === c
                                              && e.reason === "reconnect")""",
            arg=channel,
        )
        closes = page.evaluate("window.events.filter((e) => e.type === 'close')")
        assert closes == [
            {"type": "close", "code": 1006, "reason": "no pong", "wasClean": False,
             "willReconnect": True}
        ]  # fmt: skip
        sync_redis.publish(channel, orjson.dumps({"after": "reconnect"}))
        page.wait_for_function("window.received.length === 1")
    finally:
        proxy.close()
    assert len(tab.sockets) == 2
    for url, frames in tab.sockets:
        assert token not in url
        assert orjson.loads(frames[0]) == {"type": "auth", "token": token}


def test_reconnect_delays_double_up_to_the_cap(tab: Tab, gateway_process: GatewayProcess) -> None:
    page = tab.page
    page.goto(base_url(gateway_process) + "/healthz")
    defaults = page.evaluate("async () => ({ ...(await import('/client.js')).DEFAULTS })")
    assert defaults["minDelayMs"] == 100  # so the first retry comes within 100-300 ms
    assert defaults["initialDelayMs"] == 300
    assert defaults["maxDelayMs"] == 30_000
    page.evaluate("Math.random = () => 0.999999")  # always the top of the jitter range
    nothing_listens = f"ws://127.0.0.1:{free_port()}/ws"
    start_client(
        page, nothing_listens, "token", {"minDelayMs": 5, "initialDelayMs": 10, "maxDelayMs": 80}
    )
    page.wait_for_function(
        "window.events.filter((e) => e.type === 'state' && e.state === 'reconnecting').length >= 6"
    )
    retries = page.evaluate(
        """window.events.filter((e) => e.type === 'state' && e.state === 'reconnecting')
                         .map((e) => [e.attempt, Math.round(e.delayMs)])"""
    )
    assert retries[:6] == [[1, 10], [2, 20], [3, 40], [4, 80], [5, 80], [6, 80]]
    page.evaluate("window.client.close()")


# -- history and recovery -------------------------------------------------------------------------

FAST_RETRY = {"minDelayMs": 20, "initialDelayMs": 50, "maxDelayMs": 250}


def subscribe_recording(page: Page, channel: str) -> None:
    """Subscribe ``window.client``; ``window.received`` gets ``{data, offset?, epoch?}``."""
    page.evaluate(
        """c => window.client.subscribe(c, (data, channel, position) =>
            window.received.push({ channel, data, ...position }))""",
        channel,
    )


def received(page: Page, channel: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in item.items() if k != "channel"}
        for item in page.evaluate("window.received")
        if item["channel"] == channel
    ]


def wait_received(page: Page, channel: str, count: int) -> None:
    page.wait_for_function(
        "([c, n]) => window.received.filter((m) => m.channel === c).length >= n",
        arg=[channel, count],
    )


def events_of(page: Page, kind: str, channel: str) -> list[dict[str, Any]]:
    return page.evaluate(  # type: ignore[no-any-return]
        "([t, c]) => window.events.filter((e) => e.type === t && e.channel === c)", [kind, channel]
    )


def sent_frames(tab: Tab, kind: str) -> list[list[dict[str, Any]]]:
    """Per socket the page opened, the frames of type ``kind`` it sent."""
    frames = [[orjson.loads(frame) for frame in sent] for _, sent in tab.sockets]
    return [[frame for frame in socket if frame["type"] == kind] for socket in frames]


def publish(redis: Redis, channel: str, n: int) -> tuple[int, int, str]:
    return publish_with_history_sync(redis, channel, orjson.dumps({"n": n}))


def test_after_a_gateway_restart_channels_resume_from_their_offset_or_report_the_gap(
    tab: Tab, restarting_gateway: RestartingGateway, sync_redis: Redis
) -> None:
    page = tab.page
    recovers, loses, plain = unique_channel(), unique_channel(), unique_channel()
    page.goto(base_url(restarting_gateway.current) + "/healthz")
    _, _, epoch = publish(sync_redis, recovers, 1)  # before: the reply carries offset 1
    start_client(page, restarting_gateway.current.ws_url, new_session(sync_redis), FAST_RETRY)
    for channel in (recovers, loses, plain):
        subscribe_recording(page, channel)
    assert page.evaluate("c => window.client.position(c)", recovers) == {
        "offset": 1,
        "epoch": epoch,
    }
    publish(sync_redis, recovers, 2)
    _, _, lost_epoch = publish(sync_redis, loses, 1)
    wait_received(page, recovers, 1)
    wait_received(page, loses, 1)

    restarting_gateway.terminate()
    page.wait_for_function("window.client.state === 'reconnecting'")
    # While the page is away: three messages it must get, and a history that is lost.
    assert [publish(sync_redis, recovers, n)[:2] for n in (3, 4, 5)] == [(0, 3), (0, 4), (0, 5)]
    keys = HistoryKeys.for_channel(PREFIX, loses)
    assert sync_redis.delete(keys.meta, keys.stream) == 2
    _, _, new_epoch = publish(sync_redis, loses, 2)  # a new stream: offset 1 again
    restarting_gateway.start()

    wait_received(page, recovers, 4)
    for channel in (loses, plain):
        page.wait_for_function(
            "c => window.events.some((e) => e.type === 'gap' && e.channel === c)", arg=channel
        )
    assert publish(sync_redis, recovers, 6)[:2] == (1, 6)
    assert publish(sync_redis, loses, 3)[:2] == (1, 2)
    wait_received(page, recovers, 5)
    wait_received(page, loses, 2)

    # Exactly the missed messages, in order, then the live one, and no gap.
    assert received(page, recovers) == [{"data": {"n": n}, "offset": n, "epoch": epoch}
                                        for n in (2, 3, 4, 5, 6)]  # fmt: skip
    assert events_of(page, "gap", recovers) == []
    resumed = events_of(page, "subscribed", recovers)[-1]
    assert resumed == {"type": "subscribed", "channel": recovers, "resubscribed": True,
                       "recovered": True, "offset": 5, "epoch": epoch}  # fmt: skip
    # The lost history is reported with the new position, and live messages go on from there.
    assert events_of(page, "gap", loses) == [{"type": "gap", "channel": loses,
                                              "reason": "not_recovered",
                                              "offset": 1, "epoch": new_epoch}]  # fmt: skip
    assert received(page, loses) == [
        {"data": {"n": 1}, "offset": 1, "epoch": lost_epoch},
        {"data": {"n": 3}, "offset": 2, "epoch": new_epoch},
    ]
    # A channel without history cannot be resumed: the reconnect gap, as before.
    assert events_of(page, "gap", plain) == [{"type": "gap", "channel": plain,
                                              "reason": "reconnect"}]  # fmt: skip
    first_subscribes, *_, last_subscribes = [s for s in sent_frames(tab, "subscribe") if s]
    assert all("since" not in frame for frame in first_subscribes)
    since = {frame["channel"]: frame.get("since") for frame in last_subscribes}
    assert since == {
        recovers: {"offset": 2, "epoch": epoch},
        loses: {"offset": 1, "epoch": lost_epoch},
        plain: None,
    }


def test_client_drops_a_message_whose_offset_it_already_delivered(
    tab: Tab, gateway_process: GatewayProcess, sync_redis: Redis
) -> None:
    page = tab.page
    page.goto(base_url(gateway_process) + "/healthz")
    channel = unique_channel()
    start_client(page, gateway_process.ws_url, new_session(sync_redis))
    subscribe_recording(page, channel)
    _, _, epoch = publish(sync_redis, channel, 1)
    # The same offset and epoch again, as a replay overlapping live delivery would look.
    sync_redis.publish(channel, ENVELOPE_PREFIX + f"1 {epoch} ".encode() + b'{"n":"again"}')
    publish(sync_redis, channel, 2)
    page.wait_for_function(
        "c => window.received.some((m) => m.channel === c && m.offset === 2)", arg=channel
    )
    assert received(page, channel) == [
        {"data": {"n": 1}, "offset": 1, "epoch": epoch},
        {"data": {"n": 2}, "offset": 2, "epoch": epoch},
    ]


def test_gap_frame_of_the_gateway_reaches_the_app(
    tab: Tab, gateway_process: GatewayProcess, sync_redis: Redis
) -> None:
    page = tab.page
    page.goto(base_url(gateway_process) + "/healthz")
    plain, history = unique_channel(), unique_channel()
    start_client(page, gateway_process.ws_url, new_session(sync_redis))
    subscribe_recording(page, plain)
    subscribe_recording(page, history)
    publish(sync_redis, history, 1)  # now the gateway knows where this channel stands
    wait_received(page, history, 1)
    assert sync_redis.client_kill_filter(_type="pubsub") >= 1  # the gateway's subscriber
    page.wait_for_function(
        "c => window.events.some((e) => e.type === 'gap' && e.channel === c)", arg=plain
    )
    assert events_of(page, "gap", plain) == [{"type": "gap", "channel": plain, "reason": "gateway"}]
    publish(sync_redis, history, 2)  # live again, and the gateway recovered this one itself
    wait_received(page, history, 2)
    assert events_of(page, "gap", history) == []
    assert page.evaluate("window.client.state") == "open"
