"""Many nodes of the real core on one virtual clock, with an in-memory broker and a simulated executor.

The world is a heap of (time, seq, action). Node effects are carried out the way `runtime/shell.py` carries
them out, except that publishing goes to `SimBroker`, tasks "run" for a simulated duration, and the epoch
is persisted to a dict standing in for the node's data dir. Everything random comes from one seeded
`random.Random` and the heap breaks time ties by insertion order, so a seed determines the whole run; the
running `trace_hash` over every step proves it.

Connections follow the shell: on every (re)connect the node subscribes to `machine.subscriptions()` and
then gets `Connected`; a resumed MQTT session then delivers what queued while the node was away. What
faults do (crash and restart, partitions, slow nodes, clock skew, broker restart) are methods here, which
the fault kinds of `swarm.sim.faults` call; which message a network fault hits is decided in
`swarm.sim.network`.

With a CPU model (`swarm.sim.cpu`, a scenario's `[cpu]` table) nodes share hosts and every step costs
CPU time: a node's events are handled when its host gets to them, its ticks late by the host's backlog
(the lag is handed to the core as the shell hands it), and a node whose loop stays silent longer than
the broker's keepalive allows is dropped by the broker and reconnects.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import random
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Any

from swarm import topics
from swarm.core.config import CoreConfig
from swarm.core.events import (
    CancelTask,
    ClearRetained,
    Connected,
    DropJobData,
    Effect,
    Event,
    Leave,
    MessageReceived,
    Persist,
    PersistFailed,
    Publish,
    RetainedCleared,
    RunTask,
    Subscribe,
    TaskFinished,
    Tick,
    Unsubscribe,
)
from swarm.core.node import MAX_BATCH, DeviceStatus, NodeMachine
from swarm.devices.profiles import DeviceProfile, simulated_capabilities
from swarm.messages import Assignment, Envelope, NodeGone, TaskResult, TaskSpec
from swarm.sim.broker import SimBroker
from swarm.sim.cpu import CpuModel, Host
from swarm.sim.dags import DAG_STEP, SimDags
from swarm.sim.mapreduce import MAPREDUCE_TYPES, SimMapReduce
from swarm.sim.network import LinkMode, NetFaults, NetRates
from swarm.sim.simnode import BATCHED, DEFAULT_PROFILE, SimNode
from swarm.storylog import log_new_story

__all__ = ["BATCH_LIMITS", "SimNode", "SimWorld"]

#: How many waiting events one step of a node takes, chosen per seed where steps cost nothing: the
#: shell takes whatever has arrived, up to `MAX_BATCH`; 1 is a loop that is never behind.
BATCH_LIMITS = (1, 8, 64, MAX_BATCH)

CoreErrorHook = Callable[["SimNode", Event, Exception], None]


def _accept_all(spec: TaskSpec) -> str | None:
    return (
        None
        if spec.type in ("echo", "sleep", DAG_STEP, *MAPREDUCE_TYPES)
        else f"unknown task type {spec.type!r}"
    )


class SimWorld:
    """The virtual clock, the broker, the nodes and their faults."""

    def __init__(
        self,
        seed: int,
        config: CoreConfig,
        cluster: str = "sim",
        max_queued: int | None = None,
        cpu: CpuModel | None = None,
        batch_limit: int | None = None,
        session_expiry: float | None = None,
        keep_retained: bool = True,
    ) -> None:
        self.seed = seed
        # On shared CPUs a step takes what waits, up to the shell's own limit: a loop that took fewer at a
        # time would wait for the host once per event, a slower program than the shell. Where steps cost
        # nothing the seed chooses the limit, from its own generator so that the world's stays as it was.
        self.batch_limit = batch_limit or (
            MAX_BATCH if cpu is not None else random.Random(f"batch-{seed}").choice(BATCH_LIMITS)
        )
        self.rng = random.Random(seed)
        self.config = config
        self.cluster = cluster
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = count()
        self._msg_ids = count()
        self.net = NetFaults(self.rng)
        self.broker = SimBroker(lambda: self.now, self.schedule, self.net, self._on_loss, max_queued)
        self.nodes: dict[str, SimNode] = {}
        self.events_processed = 0
        self.after_step: list[Callable[[SimNode | None], None]] = []
        self.on_core_error: CoreErrorHook | None = None
        self.reconnect_hooks: list[Callable[[], None]] = []
        self.trace: deque[str] = deque(maxlen=200)
        #: World-level happenings noted so far (the trace keeps only the last ones).
        self.notes = 0
        self.losses: list[tuple[float, str, str, str]] = []
        #: Epochs a full disk refused, and the claims withheld because their epoch was not on disk.
        self.refused_writes = 0
        self.withheld_claims = 0
        self.broker_up = True
        #: The broker's configuration: how long it keeps an offline node's session (None: for ever), and
        #: whether it persists retained records at all (a broker restart may lose them even so).
        self.session_expiry = session_expiry
        self.keep_retained = keep_retained
        self._hash = hashlib.blake2b(digest_size=16)
        # MapReduce jobs: the submitter's inputs and outputs, and the two task types (swarm.sim.mapreduce).
        self.mapreduce = SimMapReduce(self.nodes, lambda: self.now)
        # DAG steps: outcomes fixed by (seed, task, attempt), and the runs to check (swarm.sim.dags).
        self.dags = SimDags(seed)
        self.cpu = cpu
        #: Whether nodes learn their loop lag, as the shell tells them (off: the core cannot tell it is late).
        self.report_lag = True
        #: How many nodes the cluster's roster admits, as the shell tells its core (0: not known).
        self.roster_size = 0
        #: Whether nodes learn it (off: no heartbeat pacing and no spread of the claim turns).
        self.report_roster = True
        self.hosts = [Host(f"host-{i}", cpu.cores, cpu.background) for i in range(cpu.hosts)] if cpu else []

    # --- clock --------------------------------------------------------------------------------------

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Run `action` at virtual time `at`."""
        heapq.heappush(self._heap, (at, next(self._seq), action))

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Process events in time order up to `until`, or until `stop()` holds.

        The cyclic garbage collector is paused meanwhile: the heap holds millions of short-lived closures,
        none in cycles, and the collector's scans of them more than doubled the wall time.
        """
        heap = self._heap
        collecting = gc.isenabled()
        gc.disable()
        try:
            while heap and heap[0][0] <= until:
                at, _, action = heapq.heappop(heap)
                self.now = at
                action()
                if stop is not None and stop():
                    return
            self.now = max(self.now, until)
        finally:
            if collecting:
                gc.enable()

    @property
    def trace_hash(self) -> str:
        """A digest of every step so far (time, node, event, message id): equal runs have equal hashes."""
        return self._hash.hexdigest()

    def latency(self) -> float:
        """A short link's delay (the observing client's): a couple of milliseconds with jitter."""
        return 0.001 + self.rng.random() * 0.004

    def note(self, what: str) -> None:
        """Record a world-level happening (a fault) in the trace."""
        self.notes += 1
        self.trace.append(f"{self.now:.3f} {what}")
        self._hash.update(f"{self.now:.6f} {what}\n".encode())

    # --- nodes --------------------------------------------------------------------------------------

    def add_node(
        self,
        node_id: str,
        profile: DeviceProfile | None = None,
        speed: float | None = None,
        disk: dict[str, int] | None = None,
        skew: float = 0.0,
    ) -> SimNode:
        """Start a node: a fresh machine, connected with a fresh session."""
        profile = profile or DEFAULT_PROFILE
        node = SimNode(
            node_id,
            self._machine(node_id, profile, disk or {}, skew),
            profile,
            speed if speed is not None else profile.cpu_speed,
            1,
            disk or {},
            skew=skew,
        )
        node.machine.status = self._status(node_id, profile)
        node.disk = disk if disk is not None else {}
        if self.hosts:
            node.host = self.hosts[len(self.nodes) % len(self.hosts)]
        self.nodes[node_id] = node
        if profile.loss:
            self.net.loss[node_id] = profile.loss
        node.up_since = self.now
        self._connect(node, clean=True)
        self._schedule_tick(node)
        return node

    def crash(self, node_id: str) -> None:
        """Kill a node at once: its will fires, its running tasks vanish with it, its session stays."""
        node = self.nodes[node_id]
        if not node.up:
            return
        self._down(node)
        self.broker.disconnect(node_id, clean=False)
        self.note(f"crash {node_id}")
        self._expire_later(node)

    def leave(self, node_id: str) -> None:
        """Shut a node down cleanly, as SIGTERM does: hand back work, say goodbye, end the session."""
        node = self.nodes[node_id]
        if not node.up:
            return
        self._step(node, Leave(), at_once=True)
        self._down(node)
        self.broker.disconnect(node_id, clean=True)
        self.note(f"leave {node_id}")

    def restart(self, node_id: str, keep_disk: bool = True) -> None:
        """Start a stopped node again, a new machine; without its data dir it forgets its epoch."""
        node = self.nodes[node_id]
        if node.up:
            return
        if not keep_disk:
            node.disk, node.files = {}, {}
        node.machine = self._machine(node_id, node.profile, node.disk, node.skew)
        node.up, node.up_since, node.link = True, self.now, None
        self.net.links.pop(node_id, None)
        self.note(f"restart {node_id} {'with' if keep_disk else 'without'} data dir")
        self._connect(node, clean=False)
        self._schedule_tick(node)

    def partition(self, node_id: str, mode: LinkMode) -> None:
        """Cut a node's link; `cut` drops the connection (the broker fires its will, queues its session)."""
        node = self.nodes[node_id]
        if not node.up:
            return
        node.link = mode
        self.net.links[node_id] = mode
        if mode == "cut" and node.connected:
            node.connected = False
            self.broker.disconnect(node_id, clean=False)
        self.note(f"partition {node_id} {mode}")

    def heal(self, node_id: str) -> None:
        """Restore a node's link; a cut node reconnects after its jittered backoff, resuming its session."""
        node = self.nodes[node_id]
        mode = self.net.links.pop(node_id, None)
        node.link = None
        self.note(f"heal {node_id}")
        if mode == "cut" and node.up:
            self._reconnect_later(node, clean=False)

    def set_slow(self, node_id: str, factor: float) -> None:
        """Scale the node's task durations by `factor` (1.0 is normal) from now on."""
        self.nodes[node_id].slow = factor
        self.note(f"slow {node_id} x{factor:g}")

    def set_disk_full(self, node_id: str, full: bool) -> None:
        """Every write to the node's data dir fails from now on (`full`), or succeeds again."""
        self.nodes[node_id].disk_full = full
        self.note(f"disk {'full' if full else 'freed'} {node_id}")

    def set_background(self, share: float) -> None:
        """Other work takes `share` of every host's cores from now on (shared CPUs only)."""
        for host in self.hosts:
            host.background = share
        self.note(f"load {share:g}")

    def set_net_rates(self, rates: NetRates) -> None:
        """Every message is dropped, duplicated, delayed or reordered at these rates from now on."""
        self.net.rates = rates
        self.note(f"network faults {rates}")

    def stop_broker(self, keep_retained: bool, keep_sessions: bool = False) -> None:
        """The broker dies: every connection is lost, and retained records and sessions survive only as
        configured (mosquitto's persistence keeps both) until `start_broker`."""
        keep_retained = keep_retained and self.keep_retained
        self.broker.restart(keep_retained, keep_sessions)
        self.broker_up = False
        for node in self.nodes.values():
            node.connected = False
        kept = (
            f"retained {'kept' if keep_retained else 'lost'}, sessions {'kept' if keep_sessions else 'lost'}"
        )
        self.note(f"broker down ({kept})")

    def start_broker(self) -> None:
        """The broker is back: every live client reconnects with jittered backoff and gets `Connected`."""
        self.broker_up = True
        self.note("broker up")
        for node in self.nodes.values():
            if node.up and node.link != "cut":
                self._reconnect_later(node, clean=False)
        for hook in self.reconnect_hooks:
            hook()

    def publish_as(self, node_id: str, topic: str, body: Any, retain: bool) -> bool:
        """Publish `body` from a node's own connection (as its services do); False when it is lost."""
        node = self.nodes[node_id]
        env = self._envelope(node_id, body, 0)
        sent = node.up and node.connected and self.broker.publish(node_id, topic, env, retain)
        self.note(f"{node_id} publishes {topic} ({'sent' if sent else 'lost'})")
        return sent

    def coordinators(self) -> list[SimNode]:
        """Live nodes that currently act as coordinator."""
        return [n for n in self.nodes.values() if n.up and n.machine.scheduler is not None]

    # --- plumbing -----------------------------------------------------------------------------------

    def _machine(
        self, node_id: str, profile: DeviceProfile, disk: dict[str, int], skew: float
    ) -> NodeMachine:
        machine = NodeMachine(
            node_id,
            node_id,
            self.config,
            random.Random(self.rng.random()),
            _accept_all,
            self._status(node_id, profile),
            disk.get("epoch", 0),
            self.now + skew,
        )
        if self.report_roster:
            machine.set_roster_size(self.roster_size)
        return machine

    @staticmethod
    def _status(node_id: str, p: DeviceProfile) -> DeviceStatus:
        battery = 80 if p.battery else None
        caps = simulated_capabilities(
            node_id, cores=p.cores, memory_mb=p.memory_mb, battery_percent=battery, runtimes=("SWARM",)
        )
        return DeviceStatus(caps, 0.1, p.memory_mb // 2, "sim")

    def _down(self, node: SimNode) -> None:
        node.up = False
        node.connected = False
        node.incarnation += 1
        node.running.clear()
        node.inbox.clear()
        node.turn_due, node.tick_due = False, None
        node.uptime += self.now - node.up_since

    def _connect(self, node: SimNode, clean: bool) -> None:
        if not self.broker_up or not node.up or node.link == "cut":
            return
        nid = node.node_id
        will = (topics.heartbeat(nid), self._envelope(nid, NodeGone("connection lost"), 0))
        p = node.profile
        lo, hi = max(p.latency_ms - p.jitter_ms, 0.05) / 1000, (p.latency_ms + p.jitter_ms) / 1000
        rng = self.rng
        self.broker.connect(nid, self._deliverer(node), lambda: rng.uniform(lo, hi), will, clean)
        node.connected = True
        for topic in node.machine.subscriptions():
            self.broker.subscribe(nid, topic)
        self._step(node, Connected())

    def _expire_later(self, node: SimNode) -> None:
        """The broker drops the session of a node still down after `session_expiry`."""
        if self.session_expiry is None:
            return
        incarnation = node.incarnation

        def expire() -> None:
            if node.incarnation == incarnation and not node.up:
                self.broker.expire(node.node_id)

        self.schedule(self.now + self.session_expiry, expire)

    def _reconnect_later(self, node: SimNode, clean: bool) -> None:
        incarnation = node.incarnation
        delay = 0.1 + self.rng.random() * 1.5

        def attempt() -> None:
            if node.up and node.incarnation == incarnation and not node.connected:
                self._connect(node, clean)

        self.schedule(self.now + delay, attempt)

    def _on_loss(self, client_id: str, topic: str, why: str) -> None:
        node = self.nodes.get(client_id)
        if node is None or node.up:
            self.losses.append((self.now, client_id, topic, why))

    def _deliverer(self, node: SimNode) -> Callable[[str, Envelope | None], None]:
        incarnation = node.incarnation

        def deliver(topic: str, env: Envelope | None) -> None:
            if node.up and node.incarnation == incarnation:
                event: Event = RetainedCleared(topic) if env is None else MessageReceived(topic, env)
                self._step(node, event)

        return deliver

    def _schedule_tick(self, node: SimNode) -> None:
        incarnation = node.incarnation
        interval = self.config.tick_interval
        if node.host is not None:
            self.schedule(
                self.now + self.rng.random() * interval, lambda: self._late_tick(node, self.now, incarnation)
            )
            return

        def tick() -> None:
            if node.up and node.incarnation == incarnation:
                self._step(node, Tick())
                self.schedule(self.now + interval, tick)

        self.schedule(self.now + self.rng.random() * interval, tick)

    def _late_tick(self, node: SimNode, due: float, incarnation: int) -> None:
        """A tick due now on a shared CPU, as the shell schedules it: queued behind the node's other
        events, the next one due an interval later but never before this one was handled."""
        if node.up and node.incarnation == incarnation:
            node.tick_due = due
            self._step(node, Tick())

    def _on_late_tick(self, node: SimNode) -> None:
        """A step is about to handle a late tick: the lag the shell would measure, and the broker's
        keepalive, which a loop silent for too long has missed."""
        due, node.tick_due = node.tick_due, None
        assert due is not None and self.cpu is not None
        lag = self.now - due
        node.max_lag = max(node.max_lag, lag)
        if lag > 1.5 * self.cpu.keepalive_s and node.connected:
            # Nothing left the node for longer than the keepalive allows: the broker drops it.
            node.connected = False
            self.broker.disconnect(node.node_id, clean=False)
            self.note(f"keepalive {node.node_id} (lag {lag:.1f}s)")
            self._reconnect_later(node, clean=False)
        if self.report_lag:
            node.machine.note_loop_lag(lag, self.now + node.skew)
        next_due, incarnation = max(due + self.config.tick_interval, self.now), node.incarnation
        self.schedule(next_due, lambda: self._late_tick(node, next_due, incarnation))

    def _step(self, node: SimNode, event: Event, at_once: bool = False) -> None:
        """Queue `event` for the node's loop, which takes what waits in one step, as the shell does; a loop
        that takes one event at a time and costs nothing handles it at once."""
        if at_once or (self.batch_limit == 1 and self.cpu is None):
            self._handle(node, [event])
            return
        node.inbox.append(event)
        if not node.turn_due:
            self._next_turn(node)

    def _next_turn(self, node: SimNode) -> None:
        """The node's loop takes its next batch once it is free: events that arrive meanwhile wait for
        it (scheduled after them, so what arrives at the same instant joins the batch)."""
        node.turn_due = True
        incarnation = node.incarnation

        def turn() -> None:
            if node.up and node.incarnation == incarnation:
                self._turn(node, incarnation)

        self.schedule(max(self.now, node.cpu_free), turn)

    def _turn(self, node: SimNode, incarnation: int) -> None:
        batch = node.inbox[: self.batch_limit]
        del node.inbox[: self.batch_limit]
        host, cpu = node.host, self.cpu
        if host is None or cpu is None:
            self._end_turn(node, batch)
            return
        cost = sum(cpu.message_ms if isinstance(e, MessageReceived) else cpu.event_ms for e in batch)
        node.cpu_free = host.run(max(self.now, node.cpu_free), cost)

        def handle() -> None:
            if node.up and node.incarnation == incarnation:
                self._end_turn(node, batch)

        self.schedule(node.cpu_free, handle)

    def _end_turn(self, node: SimNode, batch: list[Event]) -> None:
        if node.tick_due is not None and any(isinstance(e, Tick) for e in batch):
            self._on_late_tick(node)
        self._handle(node, batch)
        node.turn_due = False
        if node.inbox and node.up:
            self._next_turn(node)

    def _handle(self, node: SimNode, batch: list[Event]) -> None:
        self.events_processed += len(batch)
        try:
            effects = node.machine.handle_many(batch, self.now + node.skew)
            log_new_story(node.machine)
            for event in batch:
                # The step's effects are counted on its last event; the others are marked as batched.
                counted = len(effects) if event is batch[-1] else BATCHED
                node.log.append((self.now, event, counted))
                msg = event.env.msg_id if isinstance(event, MessageReceived) else ""
                self._hash.update(
                    f"{self.now:.6f} {node.node_id} {type(event).__name__} {msg} {counted}\n".encode()
                )
            if node.host is not None and self.cpu is not None and effects:
                # Signing and sending takes the loop's time too: the node's next events wait for it.
                node.cpu_free = node.host.run(max(self.now, node.cpu_free), self.cpu.effect_ms * len(effects))
            for effect in effects:
                self._apply(node, effect)
            node.machine.validate()
        except Exception as exc:
            if self.on_core_error is None:
                raise
            self.on_core_error(node, batch[-1], exc)
            raise
        for check in self.after_step:
            check(node)

    def _apply(self, node: SimNode, effect: Effect) -> None:
        nid = node.node_id
        match effect:
            case Publish(epoch=epoch, after_persist=True) if epoch > node.disk.get("epoch", 0):
                self.withheld_claims += 1
            case Publish(topic, body, epoch, retain):
                self._publish(node, topic, self._envelope(nid, body, epoch), retain)
            case ClearRetained(topic):
                self._publish(node, topic, None, True)
            case Subscribe(topic):
                self.broker.subscribe(nid, topic)
            case Unsubscribe(topic):
                self.broker.unsubscribe(nid, topic)
            case Persist(epoch) if node.disk_full:
                self._refuse_write(node, epoch)
            case Persist(epoch):
                node.disk["epoch"] = max(epoch, node.disk.get("epoch", 0))
            case DropJobData(job_id):
                self.mapreduce.drop(node, job_id)
            case RunTask(a):
                self._run(node, a)
            case CancelTask(task_id, attempt):
                if node.running.pop((task_id, attempt), None) is not None:
                    self._step(
                        node, TaskFinished(TaskResult(task_id, "", attempt, "cancelled")), at_once=True
                    )
            case _:
                raise TypeError(f"unknown effect {effect!r}")

    def _refuse_write(self, node: SimNode, epoch: int) -> None:
        """A full disk: the epoch stays off it, and the core hears so in a later step, as from the shell."""
        self.refused_writes += 1
        incarnation = node.incarnation

        def report() -> None:
            if node.up and node.incarnation == incarnation:
                self._step(node, PersistFailed(epoch, "No space left on device"))

        self.schedule(self.now, report)

    def _publish(self, node: SimNode, topic: str, env: Envelope | None, retain: bool) -> None:
        if node.connected:
            self.broker.publish(node.node_id, topic, env, retain)

    def _run(self, node: SimNode, a: Assignment) -> None:
        payload: dict[str, Any] = a.payload
        outcome: Callable[[], Any] | None = None  # makes the result as the attempt ends (echo: the payload)
        fails: bool | None = None
        if a.type == DAG_STEP:
            cost, fails, result = self.dags.start(a)
            duration, outcome = cost / node.speed, lambda: result
        elif a.type in MAPREDUCE_TYPES:
            cost, outcome = self.mapreduce.start(node, a)
            duration = cost / node.speed
        elif a.type == "sleep":
            duration = float(payload.get("seconds", 0.0))
        elif "cost" in payload:
            duration = float(payload["cost"]) / node.speed
        else:
            duration = (0.005 + self.rng.random() * 0.05) / node.speed
        duration *= node.slow
        failed = self.rng.random() < float(payload.get("fail_p", 0.0)) if fails is None else fails
        started = self.now + node.skew
        key = (a.task_id, a.attempt)
        token = next(self._seq)
        node.running[key] = token
        incarnation = node.incarnation

        def finish() -> None:
            if node.up and node.incarnation == incarnation and node.running.get(key) == token:
                del node.running[key]
                node.busy += duration
                end = self.now + node.skew
                if failed:
                    result = TaskResult(
                        a.task_id, a.job_id, a.attempt, "error", None, "simulated failure", None, started, end
                    )
                else:
                    node.tasks_done += 1
                    output = payload if outcome is None else outcome()
                    result = TaskResult(
                        a.task_id, a.job_id, a.attempt, "ok", output, None, None, started, end
                    )
                self._step(node, TaskFinished(result))

        self.schedule(self.now + duration, finish)

    def _envelope(self, sender: str, body: Any, epoch: int) -> Envelope:
        return Envelope(1, self.cluster, sender, epoch, f"m{next(self._msg_ids)}", body)
