"""Many nodes of the real core on one virtual clock, with an in-memory broker and a simulated executor.

The world is a heap of (time, seq, action). Node effects are carried out the way `runtime/shell.py` carries
them out, except that publishing goes to `SimBroker`, tasks "run" for a simulated duration, and the epoch
is persisted to a dict standing in for the node's data dir. Everything random comes from one seeded
`random.Random`, so a seed determines the whole run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from swarm.core.config import CoreConfig
from swarm.core.events import (
    CancelTask,
    ClearRetained,
    DropJobData,
    Effect,
    Event,
    MessageReceived,
    Persist,
    Publish,
    RetainedCleared,
    RunTask,
    Subscribe,
    TaskFinished,
    Tick,
    Unsubscribe,
)
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.capabilities import Capabilities
from swarm.messages import Envelope, NodeGone, TaskResult, TaskSpec
from swarm.sim.broker import SimBroker

__all__ = ["SimNode", "SimWorld"]


def _accept_all(spec: TaskSpec) -> str | None:
    return None if spec.type in ("echo", "sleep") else f"unknown task type {spec.type!r}"


@dataclass(slots=True)
class SimNode:
    """A simulated device: the real `NodeMachine` plus what the world keeps for it."""

    node_id: str
    machine: NodeMachine
    speed: float
    incarnation: int
    disk: dict[str, int]
    running: dict[tuple[str, int], int] = field(default_factory=dict)
    up: bool = True


class SimWorld:
    """The virtual clock, the broker, the nodes, and an observer that sees every message."""

    def __init__(self, seed: int, config: CoreConfig, cluster: str = "sim") -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config
        self.cluster = cluster
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = count()
        self._msg_ids = count()
        self.broker = SimBroker(lambda: self.now, self.schedule)
        self.nodes: dict[str, SimNode] = {}
        self.events_processed = 0
        self.after_step: list[Callable[[SimNode | None], None]] = []
        self.trace: list[str] = []

    # --- clock --------------------------------------------------------------------------------------

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Run `action` at virtual time `at`."""
        heapq.heappush(self._heap, (at, next(self._seq), action))

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Process events in time order up to `until`, or until `stop()` holds."""
        while self._heap and self._heap[0][0] <= until:
            at, _, action = heapq.heappop(self._heap)
            self.now = at
            action()
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def latency(self) -> float:
        """One link's delay: a couple of milliseconds with jitter."""
        return 0.001 + self.rng.random() * 0.004

    # --- nodes --------------------------------------------------------------------------------------

    def add_node(
        self, node_id: str, speed: float = 1.0, cores: int = 4, disk: dict[str, int] | None = None
    ) -> SimNode:
        """Start a node (or restart one, keeping its persisted epoch in `disk`)."""
        disk = disk if disk is not None else {}
        old = self.nodes.get(node_id)
        caps = Capabilities(cores, 4096, 32.0, "linux", "x86_64", False, None, None, False, "worker", node_id)
        machine = NodeMachine(
            node_id,
            node_id,
            self.config,
            random.Random(self.rng.random()),
            _accept_all,
            DeviceStatus(caps, 0.1, 2048, "sim"),
            disk.get("epoch", 0),
            self.now,
        )
        node = SimNode(node_id, machine, speed, (old.incarnation + 1) if old else 1, disk)
        self.nodes[node_id] = node
        will = (f"node/{node_id}/hb", self._envelope(node_id, NodeGone("connection lost"), 0))
        self.broker.connect(node_id, self._deliverer(node), self.latency, will)
        for topic in machine.subscriptions():
            self.broker.subscribe(node_id, topic)
        self._schedule_tick(node)
        return node

    def crash(self, node_id: str) -> None:
        """Kill a node at once: its will fires, its running tasks vanish with it."""
        node = self.nodes[node_id]
        node.up = False
        node.incarnation += 1
        self.broker.disconnect(node_id, clean=False)
        self.trace.append(f"{self.now:.3f} crash {node_id}")

    def coordinators(self) -> list[SimNode]:
        """Live nodes that currently act as coordinator."""
        return [n for n in self.nodes.values() if n.up and n.machine.scheduler is not None]

    # --- plumbing -----------------------------------------------------------------------------------

    def _deliverer(self, node: SimNode) -> Callable[[str, Envelope | None], None]:
        incarnation = node.incarnation

        def deliver(topic: str, env: Envelope | None) -> None:
            if node.up and node.incarnation == incarnation:
                event: Event = RetainedCleared(topic) if env is None else MessageReceived(topic, env)
                self._step(node, event)

        return deliver

    def _schedule_tick(self, node: SimNode) -> None:
        incarnation = node.incarnation

        def tick() -> None:
            if node.up and node.incarnation == incarnation:
                self._step(node, Tick())
                self.schedule(self.now + self.config.tick_interval, tick)

        self.schedule(self.now + self.rng.random() * self.config.tick_interval, tick)

    def _step(self, node: SimNode, event: Event) -> None:
        self.events_processed += 1
        effects = node.machine.handle(event, self.now)
        for effect in effects:
            self._apply(node, effect)
        node.machine.validate()
        for check in self.after_step:
            check(node)

    def _apply(self, node: SimNode, effect: Effect) -> None:
        nid = node.node_id
        match effect:
            case Publish(topic, body, epoch, retain):
                self.broker.publish(nid, topic, self._envelope(nid, body, epoch), retain)
            case ClearRetained(topic):
                self.broker.publish(nid, topic, None, True)
            case Subscribe(topic):
                self.broker.subscribe(nid, topic)
            case Unsubscribe(topic):
                self.broker.unsubscribe(nid, topic)
            case Persist(epoch):
                node.disk["epoch"] = epoch
            case DropJobData():
                pass  # simulated nodes keep no bulk data
            case RunTask(a):
                self._run(node, a.task_id, a.job_id, a.attempt, a.type, a.payload)
            case CancelTask(task_id, attempt):
                if node.running.pop((task_id, attempt), None) is not None:
                    self._step(node, TaskFinished(TaskResult(task_id, "", attempt, "cancelled")))
            case _:
                raise TypeError(f"unknown effect {effect!r}")

    def _run(
        self, node: SimNode, task_id: str, job_id: str, attempt: int, kind: str, payload: dict[str, Any]
    ) -> None:
        duration = float(payload.get("seconds", 0.0)) if kind == "sleep" else 0.005 + self.rng.random() * 0.05
        duration /= node.speed
        started = self.now
        key = (task_id, attempt)
        token = next(self._seq)
        node.running[key] = token
        incarnation = node.incarnation

        def finish() -> None:
            if node.up and node.incarnation == incarnation and node.running.get(key) == token:
                del node.running[key]
                result = TaskResult(task_id, job_id, attempt, "ok", payload, None, None, started, self.now)
                self._step(node, TaskFinished(result))

        self.schedule(self.now + duration, finish)

    def _envelope(self, sender: str, body: Any, epoch: int) -> Envelope:
        return Envelope(1, self.cluster, sender, epoch, f"m{next(self._msg_ids)}", body)
