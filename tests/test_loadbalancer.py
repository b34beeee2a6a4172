"""Two gateways behind the shipped nginx and HAProxy configurations (the real programs)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.sessions import session_digest
from tests.conftest import MakeGateway, MakeSession
from tests.support.balancer import Balancer
from tests.support.redis_server import RedisServer
from tests.support.ws import close_code, http_get, recv_json, request, wait_until

MakeBalancer = Callable[[str, Sequence[int]], Balancer]


@pytest.fixture
def balancer() -> Iterator[MakeBalancer]:
    started: list[Balancer] = []

    def start(kind: str, ports: Sequence[int]) -> Balancer:
        proxy = Balancer(kind, ports)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
async def test_clients_through_the_proxy_reach_both_gateways_and_revocation_closes_all(
    kind: str,
    balancer: MakeBalancer,
    gateway_factory: MakeGateway,
    make_session: MakeSession,
    redis: Redis,
) -> None:
    prefix = f"lb-{secrets.token_hex(4)}:"
    env = {
        "GATEWAY_TRUSTED_PROXY_HEADER": "X-Forwarded-For",
        "GATEWAY_MAX_ATTEMPTS_PER_IP": "1000",
        "GATEWAY_LIMIT_KEY_PREFIX": prefix,
    }
    gateways = [await gateway_factory(**env), await gateway_factory(**env)]
    proxy = balancer(kind, [g.port for g in gateways])
    assert await http_get(f"{proxy.http_url}/readyz") == (200, "ready\n")
    token = await make_session("behind-proxy")
    # A client's own X-Forwarded-For must not become its address: the proxy's entry wins.
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "203.0.113.9"}
    clients: list[ClientConnection] = []
    while not all(g.stats.sockets for g in gateways):
        assert len(clients) < 10, f"{kind} sent every connection to one gateway"
        ws = await connect(proxy.ws_url, additional_headers=headers)
        assert (await recv_json(ws))["type"] == "welcome"
        clients.append(ws)
    for ws in clients:
        assert (await request(ws, {"type": "subscribe", "channel": "public:lb"}))["type"] == (
            "subscribed"
        )
    # Each gateway subscribed once; one publish reaches every client on either.
    assert await redis.publish("public:lb", '"through the proxy"') == 2
    for ws in clients:
        assert (await recv_json(ws))["data"] == "through the proxy"
    assert int(await redis.get(f"{prefix}ip:127.0.0.1:attempts") or 0) == len(clients)
    assert await redis.keys(f"{prefix}ip:203.0.113.9*") == []
    # Revocation reaches the sockets on both gateways, close codes intact through the proxy.
    assert await redis.publish(CONTROL_CHANNEL, revoke_message(session_digest(token))) == 2
    for ws in clients:
        assert await close_code(ws) == 4001
        assert ws.close_reason == "session revoked"


async def test_haproxy_stops_sending_clients_to_a_gateway_that_is_not_ready(
    balancer: MakeBalancer,
    gateway_factory: MakeGateway,
    redis_factory: Callable[[Sequence[str]], RedisServer],
    make_session: MakeSession,
) -> None:
    private = redis_factory([])
    healthy, doomed = await gateway_factory(), await gateway_factory(private.url)
    proxy = balancer("haproxy", [healthy.port, doomed.port])
    private.kill()  # the second gateway loses Redis: /readyz 503, new clients 1013

    async def marked_down() -> bool:
        return "notify_gateway/gateway2 is DOWN" in proxy.output()

    await wait_until(marked_down)
    token = await make_session("health-checked")
    for _ in range(6):
        ws = await connect(proxy.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
        assert (await recv_json(ws))["type"] == "welcome"
        await ws.close()
    assert await http_get(f"{proxy.http_url}/readyz") == (200, "ready\n")
