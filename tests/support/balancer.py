"""nginx or HAProxy as a child process in front of test gateways, from the shipped configs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.children import end_process
from tests.support.process import ROOT
from tests.support.redis_server import free_port

__all__ = ["Balancer"]

#: the example upstream addresses in deploy/*, replaced by the test gateways' addresses
EXAMPLE_UPSTREAMS = ("10.0.0.11:8765", "10.0.0.12:8765")

_NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/notify-gateway.conf;
}}
"""


class Balancer:
    """Runs ``deploy/nginx.conf`` or ``deploy/haproxy.cfg`` on a free loopback port."""

    def __init__(self, kind: str, upstream_ports: Sequence[int]) -> None:
        assert len(upstream_ports) == len(EXAMPLE_UPSTREAMS)
        self.kind = kind
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"ng-test-{kind}-"))
        shipped = (
            ROOT / "deploy" / ("nginx.conf" if kind == "nginx" else "haproxy.cfg")
        ).read_text()
        for example, port in zip(EXAMPLE_UPSTREAMS, upstream_ports, strict=True):
            assert example in shipped
            shipped = shipped.replace(example, f"127.0.0.1:{port}")
        # Host-specific values: the listen address, a connection cap within this ulimit.
        edits = {
            "nginx": [("listen 80;", f"listen 127.0.0.1:{self.port};")],
            "haproxy": [
                ("bind :80", f"bind 127.0.0.1:{self.port}"),
                ("maxconn 200000", "maxconn 2000"),
                ("inter 2s", "inter 200ms"),  # the health check, ten times faster
            ],
        }[kind]
        for before, after in edits:
            assert before in shipped
            shipped = shipped.replace(before, after)
        if kind == "nginx":
            (self.dir / "notify-gateway.conf").write_text(shipped)
            (self.dir / "nginx.conf").write_text(_NGINX_MAIN.format(dir=self.dir))
            binary = shutil.which("nginx") or "/usr/sbin/nginx"
            args = [
                binary,
                "-p",
                str(self.dir),
                "-e",
                str(self.dir / "error.log"),
                "-c",
                str(self.dir / "nginx.conf"),
            ]
        else:
            (self.dir / "haproxy.cfg").write_text(shipped)
            binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
            args = [binary, "-db", "-f", str(self.dir / "haproxy.cfg")]
        assert Path(binary).exists(), f"{kind} is not installed (make test installs it)"
        with (self.dir / "output.log").open("ab") as output:
            self.process = subprocess.Popen(args, stdout=output, stderr=output)
        self._wait_listening()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        logs = [self.dir / "output.log", self.dir / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.exists())

    def _wait_listening(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.kind} did not listen: {self.output()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        end_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)
