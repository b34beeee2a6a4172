"""A Redis Sentinel group for tests: one master, one replica, three sentinels, all children."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from redis import Redis

from tests.support.redis_server import RedisServer

__all__ = ["MASTER", "SentinelGroup"]

MASTER = "mymaster"


class SentinelGroup:
    """Failover in a few seconds: a master is down after 1 s of silence (quorum 2 of 3)."""

    def __init__(self) -> None:
        self.master = RedisServer().start()
        self.replica = RedisServer(["--replicaof", "127.0.0.1", str(self.master.port)]).start()
        self.sentinels: list[RedisServer] = []
        for _ in range(3):
            config = Path(tempfile.mkdtemp(prefix="ng-test-sentinel-")) / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.sentinels.append(RedisServer(["--sentinel"], config=config).start())

    @property
    def addresses(self) -> str:
        """The ``REDIS_SENTINELS`` value."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def wait_settled(self, timeout_s: float = 20.0) -> None:
        """Block until the replica is in sync and every sentinel knows it and the others."""
        deadline = time.monotonic() + timeout_s
        with Redis(port=self.replica.port, decode_responses=True) as client:
            while client.info("replication")["master_link_status"] != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                time.sleep(0.05)
        for sentinel in self.sentinels:
            with Redis(port=sentinel.port, decode_responses=True) as client:
                while True:
                    replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER)
                    peers = client.execute_command("SENTINEL", "SENTINELS", MASTER)
                    if len(replicas) == 1 and len(peers) == 2:
                        break
                    assert time.monotonic() < deadline, "the sentinels never found each other"
                    time.sleep(0.1)

    def master_port(self) -> int:
        """The master's port according to the first sentinel that answers."""
        for sentinel in self.sentinels:
            if sentinel.process is not None and sentinel.process.poll() is None:
                with Redis(port=sentinel.port) as client:
                    _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                    return int(port)
        raise RuntimeError("no sentinel is running")

    def cleanup(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.cleanup()
            if server.config is not None:
                shutil.rmtree(server.config.parent, ignore_errors=True)
