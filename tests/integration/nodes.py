"""Real `swarm join` processes for integration tests, and a raw observer of the job log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.codec import DEFAULT_MAX_BYTES
from swarm.core.tracker import JobTracker
from swarm.messages import Commit
from swarm.runtime.mqtt import BrokerLogin, Transport
from swarm.trust.authority import Authority
from swarm.trust.signing import Verifier
from tests.conftest import MosquittoServer
from tests.integration.netns import Host


def loopback_env(home: Path, broker: MosquittoServer | None = None) -> dict[str, str]:
    """Environment for processes under test: mDNS and any embedded broker on loopback only, the
    cluster's secrets under `home`, and the login of a test broker if one is given."""
    env = dict(os.environ)
    env.update(
        SWARM_MDNS_INTERFACES="127.0.0.1",
        SWARM_BROKER_LISTEN="127.0.0.1",
        SWARM_DATA_LISTEN="127.0.0.1",
        SWARM_DATA_HOST="127.0.0.1",
        SWARM_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    for key in ("SWARM_BROKER", "SWARM_CLUSTER", "SWARM_TOKEN", "SWARM_API", *_LOGIN_ENV):
        env.pop(key, None)
    if broker is not None:
        env.update(
            SWARM_BROKER_USERNAME=broker.username,
            SWARM_BROKER_PASSWORD=broker.password,
            SWARM_BROKER_CA=str(broker.ca_path),
        )
    return env


_LOGIN_ENV = ("SWARM_BROKER_USERNAME", "SWARM_BROKER_PASSWORD", "SWARM_BROKER_CA")


def swarm_cmd(*args: str) -> list[str]:
    """The `swarm` command, run with this interpreter."""
    return [sys.executable, "-m", "swarm.cli", *args]


@dataclass
class Node:
    """One `swarm join` process."""

    name: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra: tuple[str, ...] = ()

    @property
    def node_id(self) -> str | None:
        """The id the node persisted in its data dir."""
        try:
            return str(json.loads((self.data_dir / "node.json").read_text())["node_id"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def kill(self) -> None:
        """SIGKILL: no goodbye, the broker's last will speaks for it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Cluster:
    """Nodes of one cluster against one broker."""

    root: Path
    server: MosquittoServer | None
    cluster: str = "test"
    nodes: list[Node] = field(default_factory=list)

    @property
    def broker(self) -> str | None:
        """The test broker's URL, or None when the nodes find or start one themselves."""
        return self.server.url if self.server else None

    def env(self, host: Host | None = None) -> dict[str, str]:
        """The environment of this cluster's processes (on another `host`: its address instead of
        loopback)."""
        env = loopback_env(self.root, self.server)
        if host is not None:
            for key in (
                "SWARM_MDNS_INTERFACES",
                "SWARM_BROKER_LISTEN",
                "SWARM_DATA_LISTEN",
                "SWARM_DATA_HOST",
            ):
                env[key] = host.address
        return env

    def verifier(self) -> Verifier:
        """Checks messages against the cluster's authority, which the first node made under `root`."""
        authority = Authority.load(self.cluster, home=self.root)
        return Verifier(self.cluster, authority.public_key, max_bytes=DEFAULT_MAX_BYTES)

    def login(self) -> BrokerLogin | None:
        """The test broker's login (None: the embedded broker's, from the local admin credential)."""
        if self.server is not None:
            return self.server.login()
        admin = Authority.load(self.cluster, home=self.root).admin_credential()
        return BrokerLogin(admin.id, admin.broker_password, admin.tls_ca_pem)

    def start(self, name: str, *extra: str, host: Host | None = None) -> Node:
        """Start a node (inside `host`, if given); its output goes to a log file under the test's tmp
        dir."""
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        args = ["join", "--cluster", self.cluster, "--name", name, "--data-dir", str(data_dir), *extra]
        if self.broker:
            args += ["--broker", self.broker]
        command = [*(host.prefix if host else []), *swarm_cmd(*args)]
        with log.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=out, env=self.env(host))
        node = Node(name, data_dir, proc, log, extra)
        self.nodes.append(node)
        return node

    def restart(self, node: Node) -> Node:
        """Start a stopped node again with its name, data dir (so its node id) and options."""
        assert node.proc.poll() is not None, f"{node.name} is still running"
        index = self.nodes.index(node)
        new = self.start(node.name, *node.extra)
        self.nodes.pop()
        self.nodes[index] = new  # by_id must find the live process, not the dead one
        return new

    def cli(
        self, *args: str, timeout: float = 120.0, host: Host | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a client command against this cluster (inside `host`, if given)."""
        full = [*args, "--cluster", self.cluster]
        if self.broker:
            full += ["--broker", self.broker]
        return subprocess.run(
            [*(host.prefix if host else []), *swarm_cmd(*full)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(host),
            check=False,
        )

    def status(self) -> dict[str, Any]:
        """`swarm status --json`, parsed."""
        out = self.cli("status", "--json", timeout=30)
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def wait_ready(self, alive: int, timeout: float = 30.0, host: Host | None = None) -> dict[str, Any]:
        """Until `alive` members are alive and a coordinator acts (as seen from `host`, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(deadline - time.monotonic(), 0.1)
            wait = ("--wait-alive", str(alive), "--wait-timeout", f"{left:.1f}")
            out = self.cli("status", "--json", *wait, timeout=left + 30, host=host)
            if out.returncode == 0:
                result: dict[str, Any] = json.loads(out.stdout)
                return result
            # 1: not ready in time; otherwise no broker yet (zero-setup start) or not reachable yet
            if out.returncode == 1 or time.monotonic() >= deadline:
                raise AssertionError(f"cluster not ready: {out.stdout}{out.stderr}\n{self.logs()}")
            time.sleep(0.3)

    def by_id(self, node_id: str) -> Node:
        """The process of a node id."""
        return next(n for n in self.nodes if n.node_id == node_id)

    def logs(self) -> str:
        """The tail of every node's log, for failure messages."""
        return "\n".join(f"--- {n.name}\n" + n.log.read_text(errors="replace")[-3000:] for n in self.nodes)

    def stop_all(self) -> None:
        """SIGTERM everyone (a clean leave), then make sure."""
        for n in self.nodes:
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            try:
                n.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()


@contextlib.contextmanager
def running(
    root: Path, broker: MosquittoServer, names: list[str], slots: int = 2, *extra: str
) -> Iterator[Cluster]:
    """A cluster of `names` nodes, ready (every node alive, a coordinator acting) until the block ends;
    `extra` are more `swarm join` options for every node."""
    cluster = Cluster(root, broker)
    for name in names:
        cluster.start(name, "--slots", str(slots), *extra)
    try:
        cluster.wait_ready(alive=len(names))
        yield cluster
    finally:
        cluster.stop_all()


class CommitObserver:
    """Counts every commit that passes the epoch gate, per task, as a submitter would see them."""

    def __init__(self, cluster: Cluster) -> None:
        self._of = cluster
        self.broker = str(cluster.broker)
        self.cluster = cluster.cluster
        self.tracker = JobTracker()
        self.counts: dict[str, int] = {}
        self._outcomes: dict[str, set[tuple[str, int, str | None, str]]] = {}
        self.nodes: dict[str, str | None] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Follow the cluster until cancelled."""
        verifier = self._of.verifier()
        login = self._of.login()
        async with Transport(self.broker, self.cluster, "observer", login=login, persistent=False) as t:
            await t.subscribe("election", "coord", "job/+/commits/+")
            self.ready.set()
            async for topic, payload, retained in t.messages():
                if not payload:
                    continue
                env = verifier.open(topic, payload, retained=retained, now=time.time()).envelope
                before = self.tracker.fenced
                self.tracker.on_envelope(env)
                if isinstance(env.body, Commit) and self.tracker.fenced == before:
                    for u in env.body.updates:
                        # A restated commit (same outcome) is not a second commit.
                        outcomes = self._outcomes.setdefault(u.task_id, set())
                        outcomes.add((u.state, u.attempt, u.node, repr(u.result)))
                        self.counts[u.task_id] = len(outcomes)
                        self.nodes[u.task_id] = u.node


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a file, empty if it does not exist yet."""
    if path.exists():
        yield from path.read_text(errors="replace").splitlines()
