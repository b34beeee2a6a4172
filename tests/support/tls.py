"""A private CA made by the tests, and redis-servers that speak only TLS."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import trustme

from tests.support.redis_server import RedisServer

__all__ = ["Certs", "TlsRedisServer", "make_certs"]


@dataclasses.dataclass(frozen=True)
class Certs:
    """PEM files: the CA, Redis's certificate and key, a client certificate, a stranger CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client: Path  # client certificate and key in one file
    other_ca: Path


def make_certs(directory: Path) -> Certs:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("notify-gateway@example.test")
    certs = Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client=directory / "client.pem",
        other_ca=directory / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(certs.ca))
    other.cert_pem.write_to_path(str(certs.other_ca))
    server.cert_chain_pems[0].write_to_path(str(certs.server_cert))
    server.private_key_pem.write_to_path(str(certs.server_key))
    client.private_key_and_cert_chain_pem.write_to_path(str(certs.client))
    return certs


class TlsRedisServer(RedisServer):
    """redis-server with TLS only (``--port 0``) on ``self.port``."""

    def __init__(self, certs: Certs, *, client_certs: bool, extra: Sequence[str] = ()) -> None:
        super().__init__()
        self.certs = certs
        self.extra = [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(certs.server_cert),
            "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes" if client_certs else "no",
            *extra,
        ]  # fmt: skip

    def client_socket(self) -> socket.socket:
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        context.load_cert_chain(str(self.certs.client))
        raw = super().client_socket()
        try:
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
