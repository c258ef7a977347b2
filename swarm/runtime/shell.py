"""The asyncio shell around `NodeMachine`: it turns traffic, time and task outcomes into events and carries
out the effects the machine returns. It holds no protocol logic of its own.

One `asyncio.TaskGroup` per connection runs the named tasks `swarm[<name>].rx` (decode incoming messages),
`.tick` (the clock), `.probe` (device status) and `.core` (feed events to the machine in batches and
carry out its effects). When the broker connection is lost, the node reconnects with jittered backoff; if
the broker was found over mDNS (or started by this node), it looks again and, finding none, starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import shutil
import time
from collections.abc import Callable

from swarm.codec import decode, encode, peek_sender
from swarm.config import NodeConfig
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
    Publish,
    RetainedCleared,
    RunTask,
    Subscribe,
    TaskFinished,
    Tick,
    Unsubscribe,
)
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.probe import load_snapshot, probe_capabilities, refresh_capabilities
from swarm.errors import ProtocolError, SwarmError
from swarm.messages import Assignment, Body, Envelope, ErrorReply, NodeGone, TaskResult, TaskSpec
from swarm.registry import Registry
from swarm.runtime.brokerlocator import BrokerLocator
from swarm.runtime.dataserver import DataServer
from swarm.runtime.executor import Executor
from swarm.runtime.mqtt import Transport, TransportError
from swarm.runtime.netaddr import advertised_host
from swarm.runtime.storage import NodeStorage
from swarm.taskapi import DataPlane

__all__ = ["NodeShell"]

log = logging.getLogger(__name__)

MAX_BATCH = 512
PROBE_INTERVAL = 5.0


class NodeShell:
    """Runs one node until `stop` is set, then leaves the cluster cleanly."""

    def __init__(self, config: NodeConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._rng = random.Random()
        self.storage = NodeStorage.open(config.data_dir)
        self.node_id = self.storage.node_id
        self._registry = Registry.from_entry_points(strict=False)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._msg_ids = itertools.count()
        self._transport: Transport | None = None
        self._locator = BrokerLocator(config, self.storage.data_dir, self._rng)
        self._data_root = self.storage.data_dir / "data"
        status = DeviceStatus(probe_capabilities(config.core.role, data_dir=self.storage.data_dir), 0.0, 0)
        self.machine = NodeMachine(
            self.node_id,
            config.name,
            config.core,
            self._rng,
            self._validate_task,
            status,
            self.storage.epoch,
            clock(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Join, serve until `stop` is set, leave."""
        work_dir = self.storage.data_dir / "work"
        work_dir.mkdir(exist_ok=True)
        self._data_root.mkdir(exist_ok=True)
        listen = os.environ.get("SWARM_DATA_LISTEN", "0.0.0.0")
        try:
            async with (
                self._locator,
                DataServer(
                    self._data_root,
                    host=listen,
                    port=self.storage.data_port,
                    any_port_if_taken=True,
                    advertise_host=advertised_host(self.config.broker),
                ) as data,
                Executor(
                    slots=self.config.core.slots,
                    node_id=self.node_id,
                    policy=self.config.policy,
                    memory_limit_mb=self.config.memory_limit_mb,
                    work_dir=work_dir,
                    strict_plugins=False,
                    data=DataPlane(str(self._data_root), data.url, self.config.spill_threshold_mb),
                ) as executor,
            ):
                log.info("node %s serves bulk data at %s", self.node_id, data.url)
                # The same port after a restart keeps this node's map outputs reachable at their URLs.
                self.storage.remember_data_port(data.port)
                await self._serve(executor, stop)
        finally:
            self.storage.close()

    async def _serve(self, executor: Executor, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            url = await self._locator.locate(rank=self.machine.succession_rank(), failures=failures)
            log.info("node %s (%s) connecting to %s", self.node_id, self.config.name, url)
            lost: BaseException | None = None
            try:
                await self._connected(url, executor, stop)
                failures = 0
            except* (TransportError, OSError) as group:
                lost = group.exceptions[0]
            if lost is not None:
                failures += 1
                delay = min(5.0, 0.2 * 2 ** min(failures, 5)) * (0.5 + self._rng.random())
                log.warning("broker connection lost (%s); retrying in %.1fs", lost, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _connected(self, url: str, executor: Executor, stop: asyncio.Event) -> None:
        will = (f"node/{self.node_id}/hb", self._encode(NodeGone("connection lost"), 0))
        async with Transport(url, self.config.cluster, self.node_id, will=will) as transport:
            self._transport = transport
            self.machine.set_status(self._status(battery=False))
            await transport.subscribe(*self.machine.subscriptions())
            self._events.put_nowait(Connected())
            name = f"swarm[{self.config.name}]"
            try:
                async with asyncio.TaskGroup() as tg:
                    core = tg.create_task(self._core_loop(executor, tg), name=f"{name}.core")
                    rx = tg.create_task(self._rx_loop(transport), name=f"{name}.rx")
                    ticker = tg.create_task(self._tick_loop(), name=f"{name}.tick")
                    prober = tg.create_task(self._probe_loop(), name=f"{name}.probe")
                    await stop.wait()
                    for task in (rx, ticker, prober):
                        task.cancel()
                    await self._leave(transport)
                    core.cancel()
            finally:
                self._transport = None

    # --- loops --------------------------------------------------------------------------------------

    async def _rx_loop(self, transport: Transport) -> None:
        async for topic, payload in transport.messages():
            if not payload:
                self._events.put_nowait(RetainedCleared(topic))
                continue
            try:
                env = decode(payload, cluster=self.config.cluster, max_bytes=self.config.max_message_bytes)
            except ProtocolError as exc:
                self._reject(topic, payload, exc)
                continue
            self._events.put_nowait(MessageReceived(topic, env))

    async def _tick_loop(self) -> None:
        interval = self.config.core.tick_interval
        while True:
            self._events.put_nowait(Tick())
            await asyncio.sleep(interval)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            self.machine.set_status(await asyncio.to_thread(self._status))

    async def _core_loop(self, executor: Executor, tg: asyncio.TaskGroup) -> None:
        while True:
            batch = [await self._events.get()]
            # One turn of the loop lets the socket deliver what has already arrived, so that under load
            # one pass handles many events and their assignments, results and commits share messages.
            await asyncio.sleep(0)
            while len(batch) < MAX_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            try:
                effects = self.machine.handle_many(batch, self._clock())
            except Exception:
                # A bug in the core must not take the device out of the cluster: log it loudly, count
                # it, and go on with the next events (the simulator is where such bugs get found).
                log.exception("the protocol core failed on %d event(s); continuing", len(batch))
                self.machine.count("core_errors")
                continue
            await self._carry_out(effects, executor, tg)

    # --- effects ------------------------------------------------------------------------------------

    async def _carry_out(self, effects: list[Effect], executor: Executor, tg: asyncio.TaskGroup) -> None:
        transport = self._transport
        assert transport is not None
        for effect in effects:
            match effect:
                case Publish(topic, body, epoch, retain):
                    transport.publish(topic, self._encode(body, epoch), retain=retain)
                case ClearRetained(topic):
                    transport.publish(topic, b"", retain=True)
                case Subscribe(topic):
                    await transport.subscribe(topic)
                case Unsubscribe(topic):
                    await transport.unsubscribe(topic)
                case Persist(epoch):
                    self.storage.persist_epoch(epoch)
                case RunTask(assignment):
                    tg.create_task(self._run_task(executor, assignment), name=f"task:{assignment.task_id}")
                case CancelTask(task_id, _):
                    executor.cancel(task_id)
                case DropJobData(job_id):
                    # Map outputs of a finished job: nobody will fetch them again.
                    await asyncio.to_thread(shutil.rmtree, self._data_root / "mr" / job_id, True)
                case _:
                    raise TypeError(f"unknown effect {effect!r}")

    async def _run_task(self, executor: Executor, a: Assignment) -> None:
        outcome = await executor.run(a.task_id, a.attempt, a.type, a.payload, a.timeout)
        result = TaskResult(
            a.task_id,
            a.job_id,
            a.attempt,
            "cancelled" if outcome.error == "cancelled" else outcome.kind,
            outcome.result,
            outcome.error,
            outcome.retry_after,
            outcome.started_at,
            outcome.finished_at,
        )
        self._events.put_nowait(TaskFinished(result))

    async def _leave(self, transport: Transport) -> None:
        """Hand back held work and say goodbye before the connection closes."""
        effects = self.machine.handle(Leave(), self._clock())
        for effect in effects:
            if isinstance(effect, Publish):
                await transport.publish_and_wait(
                    effect.topic, self._encode(effect.body, effect.epoch), retain=effect.retain
                )
            elif isinstance(effect, Unsubscribe):
                await transport.unsubscribe(effect.topic)
        log.info("node %s left the cluster", self.node_id)

    # --- helpers ------------------------------------------------------------------------------------

    def _encode(self, body: Body, epoch: int) -> bytes:
        env = Envelope(
            1, self.config.cluster, self.node_id, epoch, f"{self.node_id}-{next(self._msg_ids)}", body
        )
        return encode(env)

    def _reject(self, topic: str, payload: bytes, exc: ProtocolError) -> None:
        self.machine.count("bad_messages")
        who = peek_sender(payload)
        log.warning("refused a message on %s from %s: %s", topic, who[0] if who else "?", exc)
        if who is not None and self._transport is not None and who[0] != self.node_id:
            body = ErrorReply(who[1], f"refused by {self.node_id}: {exc}")
            self._transport.publish(f"node/{who[0]}/in", self._encode(body, self.machine.election.epoch))

    def _validate_task(self, spec: TaskSpec) -> str | None:
        # A piped task receives `previous` only when it runs; validate it as it will run.
        payload = {**spec.payload, "previous": None} if spec.pipe else spec.payload
        try:
            self._registry.validate(spec.type, payload)
        except SwarmError as exc:
            return str(exc)
        return None

    def _status(self, battery: bool = True) -> DeviceStatus:
        # Only what drifts is measured again (load, memory, disk, battery); cores, platform or GPU were
        # probed once at start. The battery may take a subprocess (Termux), so not on the event loop.
        snap = load_snapshot(self.storage.data_dir)
        caps = refresh_capabilities(self.machine.status.caps, self.storage.data_dir, battery=battery)
        return DeviceStatus(caps, snap.cpu_load, int(snap.memory_free_mb), self._locator.kind)
