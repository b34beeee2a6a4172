"""A real Redis Cluster for tests: redis-server --cluster-enabled x N, joined by redis-cli."""

from __future__ import annotations

import shutil
import subprocess
import time

from tests.support.redis_server import RedisServer, cluster_port

__all__ = ["RedisClusterProcesses"]


class RedisClusterProcesses:
    """``masters`` masters with ``replicas`` replicas each, on free loopback ports."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.nodes = [
            RedisServer(
                port=cluster_port(),
                extra=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "1000",
                    "--cluster-replica-validity-factor", "0",
                ]
            )
            for _ in range(masters * (1 + replicas))
        ]  # fmt: skip
        self.replicas = replicas

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisClusterProcesses:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed (it comes with redis-server)"
        subprocess.run(
            [
                cli, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        return self

    def cli(self, port: int, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, timeout=10, check=True
        )
        return result.stdout.decode()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports cluster_state:ok and agrees on the slot owners."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                live = [n for n in self.nodes if n.process and n.process.poll() is None]
                states = [self.cli(n.port, "CLUSTER", "INFO") for n in live]
                shards = {self.cli(n.port, "CLUSTER", "SLOTS") for n in live}
                if all("cluster_state:ok" in s for s in states) and len(shards) == 1:
                    return
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis cluster did not converge")
            time.sleep(0.1)

    def masters(self) -> list[RedisServer]:
        return [n for n in self.nodes if "role:master" in self.cli(n.port, "INFO", "replication")]

    def shard_channels(self, node: RedisServer) -> set[str]:
        return set(self.cli(node.port, "PUBSUB", "SHARDCHANNELS").split())

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
