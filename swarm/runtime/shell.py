"""The asyncio shell around `NodeMachine`: it turns traffic, time and task outcomes into events and carries
out the effects the machine returns. It holds no protocol logic of its own.

One `asyncio.TaskGroup` per connection runs the named tasks `swarm[<name>].rx` (decode incoming messages),
`.tick` (the clock), `.probe` (device status) and `.core` (feed events to the machine in batches and
carry out its effects). When the broker connection is lost, the node reconnects with jittered backoff; if
the broker was found over mDNS (or started by this node), it looks again and, finding none, starts one.

Loop lag (issue 16): a tick carries the time it was due, and the next one is not queued before the core
has handled it, so the core loop knows how late each tick is handled: how long anything that reaches
this node waits before the core sees it. It hands that lag to the core (`NodeMachine.note_loop_lag`)
before the batch holding the tick, and the core's failure detector and election scale their patience
by it (`docs/election.md`). Subscriptions do not wait for the broker's acknowledgement
(`Transport.subscribe_nowait`): a timeout there used to drop the connection of a busy node.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import itertools
import logging
import os
import random
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import replace

from swarm import topics
from swarm.api.auth import TokenVerifier
from swarm.api.host import ApiHost, BlobServer, status_of
from swarm.codec import encode
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
    PersistFailed,
    PolicyChanged,
    Publish,
    RetainedCleared,
    RunTask,
    Subscribe,
    TaskFinished,
    Tick,
    Unsubscribe,
)
from swarm.core.node import MAX_BATCH, DeviceStatus, NodeMachine
from swarm.devices.probe import load_snapshot, probe_capabilities, probe_runtimes, refresh_capabilities
from swarm.errors import ConfigError, ProtocolError, SwarmError
from swarm.ids import check_id
from swarm.messages import (
    Assignment,
    Body,
    Cancel,
    Envelope,
    ErrorReply,
    NodeGone,
    SubmitJob,
    TaskResult,
    TaskSpec,
    TrustRoster,
)
from swarm.registry import Registry
from swarm.runtime.brokerconf import BrokerSecurity, UserEntry
from swarm.runtime.brokerlocator import BrokerLocator
from swarm.runtime.dataserver import DataServer
from swarm.runtime.executor import Executor
from swarm.runtime.identity import broker_login, load_roster, save_roster
from swarm.runtime.jobaccess import JOBS_DIR, job_data_name
from swarm.runtime.logthrottle import ThrottledWarning
from swarm.runtime.mqtt import Transport, TransportError
from swarm.runtime.netaddr import advertised_host
from swarm.runtime.storage import NodeStorage
from swarm.storylog import log_new_story
from swarm.taskapi import DataPlane
from swarm.trust.audit import AuditEntry, AuditError, refused
from swarm.trust.authority import Authority, audit_log, authority_dir
from swarm.trust.credentials import Certificate, Credential
from swarm.trust.pairing import NotAddressed, Pairing
from swarm.trust.roster import Roster, broker_password
from swarm.trust.signing import UNSIGNED_ENV, AuthError, Signer, Verified, Verifier, signatures_disabled

__all__ = ["NodeShell", "persist_epoch"]

log = logging.getLogger(__name__)

#: Reconnect backoff: "full jitter" between 0 and min(cap, base x 2^failures), plus a floor, so that a
#: hundred nodes cut off together come back spread out instead of all at once.
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 15.0
RECONNECT_FLOOR_S = 0.1
#: Where an admin publishes the authority's signed roster (retained).
#: How often a node on the authority's machine looks at the roster file (one stat() call).
ROSTER_POLL_S = 0.25
PROBE_INTERVAL = 5.0


class NodeShell:
    """Runs one node until `stop` is set, then leaves the cluster cleanly.

    `storage` is the node's locked data dir and `credential` its identity in the cluster (see
    `runtime/identity.py`): every message it sends is signed with it, and every message it receives is
    checked by `Verifier` before the core sees it.
    """

    def __init__(
        self,
        config: NodeConfig,
        storage: NodeStorage,
        credential: Credential,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = random.Random()
        self.storage = storage
        self.node_id = storage.node_id
        self.credential = credential
        # Unicast messages between members are paired, not signed (see `trust/pairing.py`); with
        # signatures off for a measurement, nothing is.
        self._pairing = None if signatures_disabled() else Pairing(credential)
        self._signer = Signer(credential, self._pairing)
        self._verifier = Verifier(
            config.cluster,
            credential.authority_public,
            max_bytes=config.max_message_bytes,
            pairing=self._pairing,
        )
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        # The queued tick's due time (loop clock), and whether the core has handled it.
        self._tick_due = 0.0
        self._tick_handled = asyncio.Event()
        if signatures_disabled():
            log.warning("message signatures are OFF (%s=1): for measurements only", UNSIGNED_ENV)
        self._roster = load_roster(storage.data_dir, credential)
        self._revoked = self._roster is not None and self.node_id in self._roster.revoked
        self._registry = Registry.from_entry_points(strict=False)
        #: Whether the current broker connection was ever up (a log line says "lost" only then).
        self._link_up = False
        if self._registry.builtin_problems:
            # A node without swarm's own task types would join, even coordinate, and fail every task.
            raise ConfigError(
                f"swarm's own task types do not load, so this node does not join: "
                f"{self._registry.builtin_problems[0]} (is another `swarm` on the import path?)"
            )
        # Message ids must not repeat after a restart: receivers drop a repeated id as a replay.
        self._msg_prefix = f"{self.node_id}-{secrets.token_hex(3)}-"
        self._audit_log = audit_log(config.cluster)
        self._audit_due: list[AuditEntry] = []
        self._refusals = ThrottledWarning(log, self._clock)
        self._msg_ids = itertools.count()
        self._transport: Transport | None = None
        self._locator = BrokerLocator(config, self.storage.data_dir, self._rng, self._broker_security)
        self._data_root = self.storage.data_dir / "data"
        self._api: ApiHost | None = None
        caps = probe_capabilities(
            config.core.role, data_dir=self.storage.data_dir, labels=config.labels, taints=config.taints
        )
        caps = replace(caps, runtimes=probe_runtimes(self._registry.names(), config.policy))
        status = DeviceStatus(caps, 0.0, 0)
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
        if self._roster is not None:
            self._verifier.update_roster(self._roster)
            self._adopt_policy(self._roster)

    async def run(self, stop: asyncio.Event) -> None:
        """Join, serve until `stop` is set, leave."""
        self._audit(self.credential.certificate, "join", self.config.cluster)
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
                async with self._api_host() as api, asyncio.TaskGroup() as tg:
                    self._api = api
                    watcher = None
                    if Authority.exists(self.config.cluster):
                        name = f"swarm[{self.config.name}].roster"
                        watcher = tg.create_task(self._watch_local_roster(), name=name)
                    settle_heap()
                    await self._serve(executor, stop)
                    if watcher is not None:
                        watcher.cancel()
        finally:
            self.storage.close()
            self._write_audit(self._take_audit())

    def _api_host(self) -> contextlib.AbstractAsyncContextManager[ApiHost | None]:
        """The HTTP API, unless the config turns it off."""
        if not self.config.api:
            return contextlib.nullcontext()
        cred = self.credential
        verifier = TokenVerifier(
            cred.authority_public,
            self.config.cluster,
            lambda principal: self._roster is not None and principal in self._roster.revoked,
            self._clock,
        )
        listen = os.environ.get("SWARM_DATA_LISTEN", "0.0.0.0")
        blobs = BlobServer(self.storage.data_dir, listen, advertised_host(self.config.broker))
        timeout = self.config.core.failure_timeout
        return ApiHost(self, self.config.api, self.storage.data_dir, blobs, verifier, self._clock, timeout)

    # --- what the HTTP API asks of the node (`swarm.api.service.NodePort`) ----------------------------

    def publish(self, topic: str, body: Body, retain: bool = False) -> None:
        """Sign and send a message for the API (dropped while the broker is away; records are retained
        and re-sent by the API's callers when they time out). A retained record's copy that comes back
        is taken without decoding it again (a 1,000-step definition took a tenth of its define)."""
        if self._transport is not None:
            frame = self._seal(topic, body, self.machine.election.epoch, echo=retain)
            self._transport.publish(topic, frame, retain=retain)

    async def subscribe(self, *patterns: str) -> None:
        """Receive `patterns` now and after every reconnect."""
        if self._api is not None:
            self._api.follow(patterns)
        if self._transport is not None:
            await self._transport.subscribe(*patterns)

    async def unsubscribe(self, *patterns: str) -> None:
        """Stop receiving `patterns` for the API, except those the core follows itself."""
        if self._api is not None:
            self._api.release(patterns)
        core = set(self.machine.subscriptions())
        if self._transport is not None:
            for topic in patterns:
                if topic not in core:
                    await self._transport.unsubscribe(topic)

    def clear(self, topic: str) -> None:
        """Delete a retained record for the API."""
        if self._transport is not None:
            self._transport.publish(topic, b"", retain=True)

    def acting(self) -> bool:
        """Whether this node acts as the coordinator."""
        return self.machine.scheduler is not None

    def status(self) -> dict[str, object]:
        """This node's view of the cluster, for the API."""
        election = self.machine.election
        return status_of(
            self.node_id, election.coordinator, election.epoch, self._api.url if self._api else ""
        )

    async def _serve(self, executor: Executor, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            if self._revoked:
                raise ConfigError(
                    f"node {self.node_id} was revoked from cluster {self.config.cluster!r}; to join again,"
                    " get a new token (`swarm invite`) and use a fresh --data-dir"
                )
            url = await self._locator.locate(rank=self.machine.succession_rank(), failures=failures)
            log.info("node %s (%s) connecting to %s", self.node_id, self.config.name, url)
            lost: BaseException | None = None
            self._link_up = False
            try:
                await self._connected(url, executor, stop)
                failures = 0
            except* (TransportError, OSError) as group:
                lost = group.exceptions[0]
            if lost is not None:
                failures += 1
                delay = reconnect_delay(failures, self._rng)
                log.warning("%s; retrying in %.1fs", _link_problem(lost, url, self._link_up), delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _connected(self, url: str, executor: Executor, stop: asyncio.Event) -> None:
        hb_topic = topics.heartbeat(self.node_id)
        will = (hb_topic, self._seal(hb_topic, NodeGone("connection lost"), 0))
        login = broker_login(self.config, self.credential)
        async with Transport(url, self.config.cluster, self.node_id, login=login, will=will) as transport:
            self._transport = transport
            self._link_up = True
            self.machine.set_status(self._status(battery=False))
            extra = self._api.subscriptions() if self._api is not None else []
            await transport.subscribe(topics.ROSTER, *self.machine.subscriptions(), *extra)
            if self._api is not None:
                self._api.on_connected()
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
                    await self._leave(executor, tg)
                    core.cancel()
            finally:
                self._transport = None

    # --- loops --------------------------------------------------------------------------------------

    async def _rx_loop(self, transport: Transport) -> None:
        async for topic, payload, retained in transport.messages():
            if not payload:
                self._events.put_nowait(RetainedCleared(topic))
                continue
            try:
                verified = self._verifier.open(topic, payload, retained=retained, now=self._clock())
            except NotAddressed:
                self.machine.count("unaddressed_messages")
                continue
            except AuthError as exc:
                self._reject(topic, exc)
                continue
            except ProtocolError as exc:
                self._reject(topic, AuthError(str(exc)))
                continue
            env = verified.envelope
            if isinstance(env.body, TrustRoster):
                await self._on_roster(env.body, verified.certificate)
                continue
            if isinstance(env.body, SubmitJob | Cancel) and not retained and self.machine.scheduler:
                self._audit(verified.certificate, type(env.body).TAG, _target(env.body))
            if self._api is not None and not self._api.offer(topic, env):
                continue
            self._events.put_nowait(MessageReceived(topic, env))

    async def _tick_loop(self) -> None:
        """A tick every `tick_interval`, each due an interval after the last, never queued before the last
        was handled: a busy core gets one tick per pass over its backlog, not a pile of them."""
        loop = asyncio.get_running_loop()
        interval = self.config.core.tick_interval
        due = loop.time()
        while True:
            self._tick_due = due
            self._tick_handled.clear()
            self._events.put_nowait(Tick())
            await self._tick_handled.wait()
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())

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
            ticked = any(isinstance(event, Tick) for event in batch)
            try:
                now = self._clock()
                if ticked:
                    lag = asyncio.get_running_loop().time() - self._tick_due
                    self.machine.note_loop_lag(lag, now)
                effects = self.machine.handle_many(batch, now)
            except Exception:
                # A bug in the core must not take the device out of the cluster: log it loudly, count
                # it, and go on with the next events (the simulator is where such bugs get found).
                log.exception("the protocol core failed on %d event(s); continuing", len(batch))
                self.machine.count("core_errors")
                continue
            finally:
                if ticked:
                    self._tick_handled.set()
            await self._carry_out(effects, executor, tg)
            if ticked:
                self._flush_audit()

    # --- effects ------------------------------------------------------------------------------------

    async def _carry_out(
        self, effects: list[Effect], executor: Executor, tg: asyncio.TaskGroup, *, confirmed: bool = False
    ) -> None:
        """Log what the step noted (`NodeMachine.story`), then carry out the core's effects in order; with
        `confirmed`, each publish waits for the broker."""
        log_new_story(self.machine)
        transport = self._transport
        assert transport is not None
        # Tasks for this node start first, up to the request in their worker's pipe, before the step's
        # messages are sealed (a signature each): they wait on nothing those messages say, which are
        # only queued here, not confirmed, whichever goes first. That took 0.2 ms off every start.
        started = [
            tg.create_task(self._run_task(executor, e.assignment)) for e in effects if isinstance(e, RunTask)
        ]
        if started:
            await asyncio.sleep(0)
        for effect in effects:
            match effect:
                case Publish(epoch=epoch, after_persist=True) if epoch > self.storage.epoch:
                    # Its epoch never reached the disk (the core has a `PersistFailed` on its way).
                    continue
                case Publish(topic, body, epoch, retain) if confirmed:
                    await transport.publish_and_wait(
                        topic, self._seal(topic, body, epoch, echo=retain), retain=retain
                    )
                case Publish(topic, body, epoch, retain, lossy):
                    transport.publish(
                        topic, self._seal(topic, body, epoch, echo=retain), retain=retain, lossy=lossy
                    )
                case ClearRetained(topic):
                    transport.publish(topic, b"", retain=True)
                case Subscribe(topic):
                    # In force for whatever we publish next (the broker keeps one client's order); waiting
                    # for the acknowledgement only put a timeout on a busy loop.
                    transport.subscribe_nowait(topic)
                case Unsubscribe(topic):
                    # The API may follow the same topic (every heartbeat, while it is in use).
                    if self._api is None or not self._api.holds(topic):
                        transport.unsubscribe_nowait(topic)
                case Persist(epoch):
                    failed = persist_epoch(self.storage, epoch)
                    if failed is not None:
                        self._events.put_nowait(failed)
                case RunTask():
                    pass  # started above
                case CancelTask(task_id, attempt):
                    executor.cancel(task_id, attempt)
                case DropJobData(job_id):
                    # Map outputs of a finished job: nobody will fetch them again. The id passed the id
                    # grammar at decode time; the check below keeps that true if the grammar ever changes.
                    # Removed in the background: the core goes on with its next events meanwhile (awaiting
                    # a thread's answer for each finished job, even one that left nothing here, took
                    # 0.6 ms from the start of the next task).
                    target = self._data_root / JOBS_DIR / job_data_name(check_id(job_id, "job id"))
                    if target.parent == self._data_root / JOBS_DIR and target.exists():
                        tg.create_task(asyncio.to_thread(shutil.rmtree, target, True))
                case _:
                    raise TypeError(f"unknown effect {effect!r}")

    async def _run_task(self, executor: Executor, a: Assignment) -> None:
        payload = a.payload if self._api is None else self._api.with_local_artifact(a.payload)
        outcome = await executor.run(
            a.task_id, a.attempt, a.type, payload, a.timeout, network=a.network, owner=a.owner
        )
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

    async def _leave(self, executor: Executor, tg: asyncio.TaskGroup) -> None:
        """Hand back held work, stop what runs, and say goodbye, confirmed, before the connection closes."""
        effects = self.machine.handle(Leave(), self._clock())
        await self._carry_out(effects, executor, tg, confirmed=True)
        log.info("node %s left the cluster", self.node_id)

    # --- helpers ------------------------------------------------------------------------------------

    def _seal(self, topic: str, body: Body, epoch: int, *, echo: bool = False) -> bytes:
        """The signed frame of `body` for `topic`; with `echo`, a retained record whose copy the broker
        sends back to this node (if it follows `topic`), which is then taken without a second decode."""
        env = Envelope(
            1, self.config.cluster, self.node_id, epoch, f"{self._msg_prefix}{next(self._msg_ids)}", body
        )
        now = self._clock()
        to = None if echo else self._receiver(topic)
        if to == self.node_id:
            to = None
        frame = self._signer.seal(topic, encode(env), now, to, (to,) if to else self._readers(topic))
        if echo:
            self._verifier.expect_echo(topic, frame, Verified(env, self._signer.credential.certificate, now))
        return frame

    def _audit(self, who: Certificate | None, action: str, target: str, outcome: str = "ok") -> None:
        """Note a critical operation for this machine's audit log; the next tick writes it."""
        actor, role = (who.id, who.role) if who else ("?", "unknown")
        entry = AuditEntry(self._clock(), actor, role, self.node_id, action, target[:200], outcome[:500])
        self._audit_due.append(entry)

    def _take_audit(self) -> list[AuditEntry]:
        entries, self._audit_due = self._audit_due, []
        return entries

    def _flush_audit(self) -> None:
        """Write the noted operations off the event loop, all in one append (one fsync).

        Once per tick rather than once per message: a burst of submissions paid an fsync each, and the
        Python of each append ran on a thread beside the event loop while it was starting their tasks.
        """
        if self._audit_due:
            asyncio.get_running_loop().run_in_executor(None, self._write_audit, self._take_audit())

    def _write_audit(self, entries: list[AuditEntry]) -> None:
        try:
            self._audit_log.append_many(entries)
        except (OSError, ValueError, AuditError) as exc:
            log.warning(
                "could not write %d audit record(s) to %s: %s", len(entries), self._audit_log.path, exc
            )

    def _reject(self, topic: str, exc: AuthError) -> None:
        """Count a refused message, log and audit it at most once a second (with how many more were
        refused meanwhile: a broker that held messages too long can make thousands stale at once); answer
        only a sender whose signature was good."""
        self.machine.count("bad_messages")
        if self._refusals.warning(f"refused a message on {topic}: {exc}", "more refused since the last line"):
            self._audit(None, "refused", topic, refused(str(exc)))
        if exc.reply_to is None or self._transport is None or exc.reply_to[0] == self.node_id:
            return
        inbox = topics.inbox(exc.reply_to[0])
        body = ErrorReply(exc.reply_to[1], f"refused by {self.node_id}: {exc}")
        self._transport.publish(inbox, self._seal(inbox, body, self.machine.election.epoch))

    async def _on_roster(self, body: TrustRoster, sender: Certificate) -> None:
        """A roster published by an admin: taken if its authority signature checks and it is newer."""
        try:
            roster = Roster.from_bytes(body.roster.encode(), self.credential.authority_public)
        except ValueError as exc:
            log.warning("refused a roster from %s: %s", sender.id, exc)
            self.machine.count("bad_messages")
            return
        await self._apply_roster(roster)

    async def _apply_roster(self, roster: Roster) -> None:
        """A newer roster: take its revocations, keep it, and let a broker we run admit its principals."""
        if not self._verifier.update_roster(roster):
            return
        self._roster = roster
        self._adopt_policy(roster)
        save_roster(self.storage.data_dir, roster)
        log.info(
            "roster %d: %d principals, %d revoked", roster.serial, len(roster.principals), len(roster.revoked)
        )
        await self._locator.update_security(self._broker_security())
        if self.node_id in roster.revoked:
            log.error("this node was revoked from cluster %r", self.config.cluster)
            self._revoked = True

    def _adopt_policy(self, roster: Roster) -> None:
        """What the core takes from a roster: its quotas, and how many nodes it admits."""
        self._events.put_nowait(PolicyChanged(roster.quota_list()))
        self.machine.set_roster_size(sum(p.kind == "node" for p in roster.active(self._clock())))

    async def _watch_local_roster(self) -> None:
        """On the authority's machine, follow its roster file: a device invited or a node started here is
        admitted by a broker this node runs before anyone publishes the roster."""
        path = authority_dir(self.config.cluster) / "roster.json"
        seen = 0.0
        while True:
            with contextlib.suppress(OSError):
                mtime = path.stat().st_mtime
                if mtime != seen:
                    seen = mtime
                    roster = Roster.from_bytes(path.read_bytes(), self.credential.authority_public)
                    await self._apply_roster(roster)
            await asyncio.sleep(ROSTER_POLL_S)

    def _broker_security(self) -> BrokerSecurity:
        """What a broker this node starts needs: the roster's logins and the cluster's TLS material."""
        cred = self.credential
        active = self._roster.active(self._clock()) if self._roster else []
        entries = {p.id: UserEntry(broker_password(cred.broker_secret, p.id), p.kind, p.role) for p in active}
        entries.setdefault(cred.id, UserEntry(cred.broker_password, "node", "member"))
        return BrokerSecurity(cred.cluster, entries, cred.tls_cert_pem, cred.tls_key_pem, cred.tls_ca_pem)

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
        api = self._api.url if self._api is not None else ""
        return DeviceStatus(caps, snap.cpu_load, int(snap.memory_free_mb), self._locator.kind, api)

    def _receiver(self, topic: str) -> str | None:
        """The one member that reads `topic`, if there is one: the owner of an inbox, or the coordinator
        this node knows for the coordinator's inbox (a message to it is paired)."""
        if topic == topics.COORD_INBOX:
            return self.machine.election.coordinator
        return topics.inbox_owner(topic)

    def _readers(self, topic: str) -> list[str]:
        """The peers whose reading of `topic` is on the task path, so that a MAC for each saves it an
        Ed25519 check (`trust/pairing.py`, Authenticators): the coordinator and its standbys, which follow
        every heartbeat and the job log, and the submitter of the job `topic` is about."""
        election = self.machine.election
        readers = [election.coordinator or "", *election.standbys]
        job = topics.job_of(topic)
        scheduler = self.machine.scheduler
        if job is not None and scheduler is not None:
            record = scheduler.jobs.get(job[0])
            if record is not None:
                readers.append(record.spec.submitted_by)
        return [reader for reader in readers if reader and reader != self.node_id]


#: Allocations of container objects between two collections of the youngest generation (Python's
#: default is 700).
GC_YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Once a node has started: take everything it built to start (modules, plugins, config, caches)
    out of the garbage collector's sight, and collect the young generation less often.

    A node makes little cyclic garbage, but every collection of the oldest generation walked all of
    that, and under a stream of tasks the collector took 6-7 % of a node's CPU; this way, 1-2 %.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def persist_epoch(storage: NodeStorage, epoch: int) -> PersistFailed | None:
    """Store `epoch`; a disk that refuses it (full, read-only, failing) is an event for the core to
    handle, not an exception that would take the node out of the cluster."""
    try:
        storage.persist_epoch(epoch)
    except OSError as exc:
        return PersistFailed(epoch, f"{exc.strerror or exc} ({storage.data_dir})")
    return None


def reconnect_delay(failures: int, rng: random.Random) -> float:
    """Seconds to wait before reconnecting after `failures` lost connections in a row: bounded, with
    full jitter, so a reconnect storm of many nodes does not knock the broker over."""
    ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2.0 ** min(failures, 16))
    return RECONNECT_FLOOR_S + rng.random() * ceiling


def _target(body: SubmitJob | Cancel) -> str:
    return body.job_id if isinstance(body, SubmitJob) else body.target


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM})


def _link_problem(exc: BaseException, url: str, was_up: bool) -> str:
    """One log line for why the broker loop restarts, saying what to do: a local file that cannot be
    written is not a broker outage, and a broker never reached was not "lost"."""
    if isinstance(exc, OSError) and exc.filename and exc.errno in _DISK_ERRNOS:
        return f"cannot write {exc.filename}: {exc.strerror}; free space or fix permissions of the data dir"
    if not was_up:
        return f"cannot reach the broker at {url} ({exc}); is it running and reachable from here?"
    return f"broker connection to {url} lost ({exc})"
