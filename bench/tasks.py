"""Trivial-task benchmark: swarm against Dask, Ray and `multiprocessing.Pool` on this machine.

What it measures, all in one run so the figures share the same hardware and load:

1. Throughput: N trivial tasks (default 10,000) from the first submit to the last result received at
   the submitter. For swarm these are `echo` tasks with a tiny payload, submitted with `SwarmClient`
   (as the cluster's admin, on the event loop the `swarm` command and the nodes run) as one or more
   concurrent `SubmitJob`s (default: one job, then 20; every split is reported) to a cluster of two
   real `swarm join` processes talking through a real mosquitto on a loopback port.
2. Submit-to-start latency of M sequential tasks (default 500), each submitted alone and awaited before
   the next: `started_at` as the task's worker process recorded it (`time.time()`, delivered to the
   client in the committed `TaskUpdate`) minus the client's `time.time()` just before the submit.
   The submit-to-result round trip is reported too.
3. The same work on Dask distributed (LocalCluster, 2 worker processes with 1 thread each), Ray
   (`num_cpus=2`) and `multiprocessing.Pool(2)`, the ceiling without any network. A peer that is not
   installed or does not start is skipped with the reason printed.

Swarm's goals are printed next to the figures: >= 15,000 tasks/s with two nodes (>= 12,000 as one job),
p50 start below Ray's in the same run (aim: < 0.5 ms), p99 start < 2 ms.

Swarm is measured in five configurations, each on a cluster of its own (`--security` picks some):

- signed+TLS: the default, what users get: every message signed with Ed25519 and checked by every
  receiver (or, from one member to another, authenticated with their pair key; a reader the sender is
  paired with checks its own MAC beside the signature instead: `trust/pairing.py`), and the broker
  reached over TLS with a password and an ACL;
- unsigned+TLS and signed+plain: one of the two taken away (plain TCP keeps the password and the ACL);
- unsigned+plain: both taken away, the baseline;
- signed+TLS on asyncio's own event loop instead of uvloop (`SWARM_LOOP=asyncio`), what uvloop gives.

Signatures (and pair keys) are turned off with `SWARM_BENCH_UNSIGNED=1` in every process of the cluster
and in this one; every other check stays. The clusters run at once and take turns run by run, `--rounds`
times (default 3), so that whatever else loads the machine falls on all of them; the best throughput
of each counts (every round's is printed) and latency pools every round. The report then prints what
security costs against unsigned+plain, in % of throughput and of p50 start, what signatures alone
cost against the budget of 10% of throughput, and the CPU per task of every process in each
configuration. Last, an untimed look at the secured cluster: the messages a task costs in each split
(every publish, counted by one more subscriber; every delivery, from the broker's counters) and what
sealing and opening one message costs in this process with signatures on and off, hence what Ed25519
costs a task in CPU; with `--profile`, one more run under py-spy gives each process's share of
Ed25519 and its top functions.

For each swarm throughput run it also prints the CPU time every process of the cluster spent per task
(the submitting client, mosquitto, the coordinating node, the other node, and each one's executor
workers), so a run that misses the target shows where the cycles went. Slots per node matter little for
trivial tasks (the nodes' messaging is the cost, not running the task); 4 measured slightly best on a
2-core machine, hence the default.

Usage (from the repository root, with `pip install -e .[bench]`)::

    python bench/tasks.py                        # the full run
    python bench/tasks.py --tasks 2000 --sequential 100 --skip dask,ray --rounds 1
    python bench/tasks.py --security signed+tls --no-dissect     # what users get, alone
    python bench/tasks.py --profile                 # also where the secured cluster's time goes
    python bench/tasks.py --slots 1,2,4 --jobs 1,20,100

Everything runs on loopback; every process and temporary directory it creates is removed at the end,
also after Ctrl-C or a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import psutil
from _cluster import (
    CLUSTER,
    HOST,
    SwarmCluster,
    cpu_seconds,
    dask_local_cluster,
    say,
    scratch_dir,
    sigterm_as_interrupt,
    start_profilers,
    stop_profilers,
    top_frames,
)

from swarm.codec import DEFAULT_MAX_BYTES, encode
from swarm.core.jobs import check_job
from swarm.ids import new_job_id
from swarm.messages import Envelope, SubmitJob, TaskSpec, TasksQuery
from swarm.runtime.client import SwarmClient
from swarm.runtime.mqtt import Transport
from swarm.trust.signing import PAIRED_MAGIC, UNSIGNED_ENV, Signer, Verifier
from swarm.trust.tls import client_context

TARGET_TPS = 15_000.0
TARGET_TPS_ONE_JOB = 12_000.0
TARGET_P50_MS = 0.5  # the aim; the goal is Ray's p50 in the same run
TARGET_P99_MS = 2.0
WARMUP_SEQUENTIAL = 30
WARMUP_TASKS = 1000


# --- the trivial work every system runs (module level, so that every system can pickle it) ----------


def trivial(x: int) -> int:
    """The throughput task: return the argument."""
    return x


def started(_: object = None) -> float:
    """The latency task: when it ran, as `time.time()` in the worker."""
    return time.time()


# --- results ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Security:
    """How a swarm cluster is secured: message signatures on or off, TLS or plain TCP to the broker.
    Passwords and the ACL stay in every configuration; the others exist only to measure the cost."""

    name: str  # as given to --security
    label: str
    signed: bool
    tls: bool
    loop: str = "uvloop"  # the nodes' event loop; "asyncio" measures what uvloop gives


SECURITIES = (
    Security("signed+tls", "signed+TLS", signed=True, tls=True),  # the default: what users get
    Security("unsigned+tls", "unsigned+TLS", signed=False, tls=True),
    Security("signed+plain", "signed+plain", signed=True, tls=False),
    Security("unsigned+plain", "unsigned+plain", signed=False, tls=False),
    Security("signed+tls+asyncio", "signed+TLS, asyncio loop", signed=True, tls=True, loop="asyncio"),
)
SECURITY = {s.name: s for s in SECURITIES}
SECURED = SECURITY["signed+tls"]
BASELINE = SECURITY["unsigned+plain"]
#: The issue's bound on what signatures may cost, as a share of task throughput.
SIGNING_BUDGET = 0.10


@dataclass
class Result:
    """One system's figures; empty lists and None where a part was not measured."""

    system: str
    tps: float | None = None  # swarm: the best of its splits
    start_ms: list[float] = field(default_factory=list)
    rt_ms: list[float] = field(default_factory=list)
    skipped: str | None = None
    security: Security | None = None  # swarm only, like the fields below
    slots: int = 0
    rounds: dict[int, list[float]] = field(default_factory=dict)  # tasks/s of each round, by jobs
    cpu_us: dict[int, dict[str, float]] = field(default_factory=dict)  # CPU us/task by process, best round

    def best(self, jobs: int) -> float | None:
        """The best throughput as `jobs` concurrent jobs (None: not measured)."""
        return max(self.rounds.get(jobs, ()), default=None)


def swarm_label(security: Security, slots: int) -> str:
    """The table's name of a swarm configuration."""
    return f"swarm {security.label} (2 nodes x {slots} slots)"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


# --- swarm ---------------------------------------------------------------------------------------------


def _echo_job(tasks: int) -> SubmitJob:
    job_id = new_job_id()
    specs = tuple(TaskSpec(f"{job_id}.{i}", "echo", {"i": i}) for i in range(tasks))
    job = SubmitJob(job_id, specs, kind="task" if tasks == 1 else "batch")
    check_job(job)
    return job


async def _client(cluster: SwarmCluster) -> SwarmClient:
    """An entered `SwarmClient` that has seen the coordinator (the caller exits it)."""
    client = cluster.client()
    await client.__aenter__()
    deadline = time.monotonic() + 10.0
    while client.tracker.coordinator is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return client


async def swarm_throughput(cluster: SwarmCluster, total: int, jobs: int) -> float:
    """Tasks per second for `total` echo tasks split over `jobs` concurrent submissions."""
    client = await _client(cluster)
    try:
        sizes = [total // jobs + (1 if i < total % jobs else 0) for i in range(jobs)]
        batch = [_echo_job(n) for n in sizes if n]
        timeout = max(120.0, total / 50)
        t0 = time.perf_counter()
        progresses = await asyncio.gather(*(client.submit(job, timeout=timeout) for job in batch))
        elapsed = time.perf_counter() - t0
    finally:
        await client.__aexit__(None, None, None)
    done = sum(1 for p in progresses for u in p.updates.values() if u.state == "done")
    if done != total:
        raise RuntimeError(f"swarm: only {done} of {total} tasks done")
    return total / elapsed


async def swarm_sequential(cluster: SwarmCluster, count: int) -> tuple[list[float], list[float]]:
    """Submit-to-start and submit-to-result times in ms of `count` tasks submitted one at a time."""
    client = await _client(cluster)
    start_ms: list[float] = []
    rt_ms: list[float] = []
    try:
        for _ in range(count):
            job = _echo_job(1)
            task_id = job.tasks[0].task_id
            t0 = time.time()
            progress = await client.submit(job, timeout=60.0)
            t1 = time.time()
            update = progress.updates[task_id]
            if update.state != "done" or not update.started_at:
                raise RuntimeError(f"swarm: task {task_id} {update.state}: {update.error}")
            start_ms.append((update.started_at - t0) * 1000)
            rt_ms.append((t1 - t0) * 1000)
    finally:
        await client.__aexit__(None, None, None)
    return start_ms, rt_ms


@dataclass
class MessageCount:
    """The messages of one untimed run: publishes by kind of topic and the copies delivered."""

    tasks: int
    jobs: int
    counts: collections.Counter[str] = field(default_factory=collections.Counter)  # publishes by kind
    sizes: collections.Counter[str] = field(default_factory=collections.Counter)  # their bytes
    delivered: int | None = None  # copies the broker sent to the cluster and the client (None: unknown)
    paired: int = 0  # publishes that were paired frames (a MAC for their one receiver, no signature)

    @property
    def published(self) -> int:
        """Every publish of the run."""
        return sum(self.counts.values())


@dataclass
class Anatomy:
    """A look inside one configuration: messages per task, what signing and checking one costs in
    this process, and where the cluster's processes spend their time (a py-spy profile)."""

    security: Security
    runs: list[MessageCount] = field(default_factory=list)
    seal_us: dict[bool, float] = field(default_factory=dict)  # `Signer.seal`, by signatures on/off
    open_us: dict[bool, float] = field(default_factory=dict)  # `Verifier.open`, likewise
    profile: list[str] = field(default_factory=list)  # report lines of the profiled run

    def ed25519_us(self, run: MessageCount) -> float | None:
        """Ed25519's CPU per task: one signature per signed publish, one check per delivered copy of one
        (a paired publish has one receiver and costs a MAC, which is left out)."""
        if run.delivered is None or len(self.seal_us) < 2 or len(self.open_us) < 2:
            return None
        sign = self.seal_us[True] - self.seal_us[False]
        check = self.open_us[True] - self.open_us[False]
        signed = run.published - run.paired
        return (signed * sign + (run.delivered - run.paired) * check) / run.tasks


def _topic_kind(topic: str) -> str:
    """'job/<id>/commits/3' -> 'job/+/commits/+', 'node/<id>/in' -> 'node/+/in'."""
    levels = topic.split("/")
    if levels[0] in ("node", "job") and len(levels) > 1:
        levels[1] = "+"
    if levels[0] == "job" and len(levels) > 3:
        levels[3] = "+"
    return "/".join(levels)


# What mosquitto counts as sent includes every copy it delivers (its count of publishes received
# leaves retained ones out, so the publishes are counted by a subscriber instead).
_SYS_SENT = "$SYS/broker/publish/messages/sent"


class BrokerCounters:
    """mosquitto's count of publishes sent, which it publishes every second while it changes (the
    benchmark's broker is configured so); an async context manager."""

    def __init__(self, cluster: SwarmCluster) -> None:
        login = cluster.login()
        self._client = aiomqtt.Client(
            HOST,
            cluster.port,
            identifier="bench-sys",
            username=login.username,
            password=login.password,
            tls_context=client_context(login.ca_pem) if login.ca_pem else None,
        )
        self.sent = 0
        self.updates = 0
        self.seen = 0  # $SYS messages delivered to this client, which the broker may count as sent
        self._changed = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BrokerCounters:
        await self._client.__aenter__()
        await self._client.subscribe(_SYS_SENT, 0)
        self._follower = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        await self._client.__aexit__(None, None, None)

    async def _follow(self) -> None:
        async for message in self._client.messages:
            self.seen += 1
            with contextlib.suppress(ValueError, TypeError):
                self.sent = int(message.payload)
                self.updates += 1
            self._changed.set()

    async def next_update(self, timeout: float = 5.0) -> tuple[int, int]:
        """(publishes sent, $SYS messages seen) at the broker's next update after now; TimeoutError
        when the count did not change within `timeout` (heartbeats change it every second)."""
        before = self.updates
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.updates <= before:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))
        return self.sent, self.seen


async def count_messages(cluster: SwarmCluster, total: int, jobs: int) -> MessageCount:
    """The messages `total` tasks cost as `jobs` jobs: every publish by kind of topic, seen by one more
    subscriber to the whole cluster (which loads the broker: this run is not timed), and the copies the
    broker delivered, from its counters (the extra subscriber's and the counters' own taken out)."""
    count = MessageCount(total, jobs)
    copies = 0  # every copy the extra subscriber got, retained or not: the broker counts each as sent
    bulk = 0  # those of them that are not heartbeats, which never stop
    transport = Transport(cluster.url, CLUSTER, "bench-counter", login=cluster.login(), persistent=False)

    async def quiet(timeout: float = 60.0) -> None:
        """Until the extra subscriber got nothing but heartbeats for a while: the broker has sent it
        all it had."""
        deadline = time.monotonic() + timeout
        last = -1
        while bulk != last and time.monotonic() < deadline:
            last = bulk
            await asyncio.sleep(0.3)

    async with transport, BrokerCounters(cluster) as counters:
        await transport.subscribe("#")

        async def follow() -> None:
            nonlocal copies, bulk
            async for topic, payload, retained in transport.messages():
                copies += 1
                bulk += not topic.endswith("/hb")
                if not retained:  # retained ones are the state of earlier jobs, sent on subscribing
                    count.counts[_topic_kind(topic)] += 1
                    count.sizes[_topic_kind(topic)] += len(payload)
                    count.paired += payload[:3] == PAIRED_MAGIC

        follower = asyncio.create_task(follow())
        try:
            await quiet()  # the retained state of every earlier job (megabytes after a few rounds)
            try:
                sent0, sys0 = await counters.next_update()
            except TimeoutError:
                sent0 = sys0 = -1
            copies0 = copies
            count.counts.clear()
            count.sizes.clear()
            count.paired = 0
            await swarm_throughput(cluster, total, jobs)
            await asyncio.sleep(0.5)  # the last commits and events
            if sent0 >= 0:
                with contextlib.suppress(TimeoutError):
                    sent1, sys1 = await counters.next_update()
                    await quiet()  # what the broker counted may still be on its way here
                    count.delivered = (sent1 - sent0) - (copies - copies0) - (sys1 - sys0)
            else:
                await quiet()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
    return count


def signing_cost(cluster: SwarmCluster, anatomy: Anatomy, repeat: int = 2000) -> None:
    """Time `Signer.seal` and `Verifier.open` of a small message (a tasks query, as the admin sends
    it) in this process, with signatures on and off: what one message adds to its sender and to each
    receiver."""
    credential = cluster.admin_credential()
    sender = f"{credential.id}.bench"
    payload = encode(Envelope(1, CLUSTER, sender, 0, f"{sender}-1", TasksQuery(1000, None)))
    previous = os.environ.pop(UNSIGNED_ENV, None)
    try:
        for signed in (True, False):
            if not signed:
                os.environ[UNSIGNED_ENV] = "1"
            signer = Signer(credential)
            verifier = Verifier(CLUSTER, credential.authority_public, max_bytes=DEFAULT_MAX_BYTES)
            frame = signer.seal("coord/in", payload, time.time())
            verifier.open("coord/in", frame, retained=True, now=time.time())  # caches the certificate
            t0 = time.perf_counter()
            for _ in range(repeat):
                signer.seal("coord/in", payload, 1.0)
            anatomy.seal_us[signed] = (time.perf_counter() - t0) / repeat * 1e6
            t0 = time.perf_counter()
            # retained=True skips the replay check, which a repeated frame would fail; it costs the
            # same with signatures on or off.
            for _ in range(repeat):
                verifier.open("coord/in", frame, retained=True, now=1.0)
            anatomy.open_us[signed] = (time.perf_counter() - t0) / repeat * 1e6
    finally:
        os.environ.pop(UNSIGNED_ENV, None)
        if previous is not None:
            os.environ[UNSIGNED_ENV] = previous


def _call_lines(function: Callable[..., object], call: str) -> set[int]:
    """The line numbers in `function`'s source that contain `call`."""
    lines, first = inspect.getsourcelines(function)
    return {first + i for i, text in enumerate(lines) if call in text}


def ed25519_share(path: Path) -> tuple[int, float, float]:
    """(samples, share signing, share checking) of a py-spy raw profile: the samples whose stack is
    at the line of `Signer.seal` that signs or the line of `Verifier._open_signed` that checks (whatever
    runs under that line, native code included, is Ed25519's)."""
    where = "swarm/trust/signing.py:"
    signs = {f"{where}{n})" for n in _call_lines(Signer.seal, "._key.sign(")}
    checks = {f"{where}{n})" for n in _call_lines(Verifier._open_signed, "key.verify(")}
    total = signing = checking = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if any(f.endswith(tuple(signs)) for f in frames):
            signing += count
        elif any(f.endswith(tuple(checks)) for f in frames):
            checking += count
    return total, signing / max(total, 1), checking / max(total, 1)


def profile_run(cluster: SwarmCluster, total: int, jobs: int, directory: Path) -> list[str]:
    """One more (untimed) throughput run with py-spy on this process and the cluster's nodes: each
    one's share of Ed25519 and its top functions. Report lines; empty when py-spy is missing."""
    groups = {role: procs for role, procs in _role_groups(cluster).items() if "executor" not in role}
    recorders = start_profilers(groups, directory)
    if not recorders:
        return []
    try:
        time.sleep(1.0)  # py-spy attaches in the background
        tps = cluster.run(swarm_throughput(cluster, total, jobs))
    finally:
        profiles = stop_profilers(recorders)
    lines = [
        f"profiled run (py-spy at 100 Hz, {total} tasks as {_jobs(jobs)}, not timed): {tps:,.0f} tasks/s"
    ]
    for label, path in profiles.items():
        samples, signing, checking = ed25519_share(path)
        if samples < 20:
            continue
        lines.append(
            f"  {label}: {samples} samples of it busy; Ed25519 {signing + checking:.1%} of them "
            f"(signing {signing:.1%}, checking {checking:.1%})"
        )
        _, rows = top_frames(path, limit=6)
        lines += [f"    {share:6.1%} self {incl:6.1%} incl  {name}" for name, share, incl in rows]
    return lines


ROLES = ("client", "mosquitto", "coordinator", "coord executor", "other node", "other executor")


def _role_groups(cluster: SwarmCluster) -> dict[str, list[psutil.Process]]:
    """The processes of this client and the cluster by role (`ROLES`, in that order), so that
    clusters compare: which of w1 and w2 coordinates differs from one cluster to the next."""
    groups: dict[str, list[psutil.Process]] = {"client": [psutil.Process()]}
    for name, procs in cluster.process_groups().items():
        node, _, what = name.partition(" ")
        if node == "mosquitto":
            groups["mosquitto"] = procs
            continue
        coordinates = node == cluster.coordinator_name
        if what == "executor":
            groups["coord executor" if coordinates else "other executor"] = procs
        else:
            groups["coordinator" if coordinates else "other node"] = procs
    return {role: groups[role] for role in ROLES if role in groups}


def measure_throughput(cluster: SwarmCluster, result: Result, total: int, jobs: int) -> None:
    """One throughput run, with the CPU every process spent per task; added to `result`'s rounds."""
    groups = _role_groups(cluster)
    before = cpu_seconds(groups)
    t0 = time.perf_counter()
    tps = cluster.run(swarm_throughput(cluster, total, jobs))
    wall = time.perf_counter() - t0
    after = cpu_seconds(groups)
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    per_task = {name: secs / total * 1e6 for name, secs in spent.items()}
    busy = sum(spent.values()) / (wall * (os.cpu_count() or 1))
    label = result.security.label if result.security else ""
    say(f"  {label}: {total} tasks as {_jobs(jobs)}: {tps:,.0f} tasks/s")
    say(
        f"    CPU us/task: {', '.join(f'{n} {us:.0f}' for n, us in per_task.items())}; "
        f"total {sum(per_task.values()):.0f}; machine busy {busy:.0%} of {os.cpu_count()} cores"
        f" over {wall:.1f}s"
    )
    if tps > (result.best(jobs) or 0.0):
        result.cpu_us[jobs] = per_task
    result.rounds.setdefault(jobs, []).append(tps)


def measure_latency(cluster: SwarmCluster, result: Result, count: int) -> None:
    """`count` sequential tasks, added to `result`'s latency samples."""
    start_ms, rt_ms = cluster.run(swarm_sequential(cluster, count))
    result.start_ms += start_ms
    result.rt_ms += rt_ms
    say(
        f"  {result.security.label if result.security else ''}: {count} sequential: start p50 "
        f"{percentile(start_ms, 50):.2f} ms, round trip p50 {percentile(rt_ms, 50):.2f} ms"
    )


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


# --- peers -----------------------------------------------------------------------------------------------


def _sequential_times(run_one: Any, count: int) -> tuple[list[float], list[float]]:
    """Time `count` calls of `run_one()`, which returns the task's own `time.time()` at start."""
    start_ms: list[float] = []
    rt_ms: list[float] = []
    for _ in range(count):
        t0 = time.time()
        began = float(run_one())
        t1 = time.time()
        start_ms.append((began - t0) * 1000)
        rt_ms.append((t1 - t0) * 1000)
    return start_ms, rt_ms


def bench_pool(total: int, sequential: int) -> Result:
    """`multiprocessing.Pool(2)`: no network, no scheduler; the ceiling."""
    result = Result("multiprocessing.Pool(2)")
    pool = multiprocessing.Pool(2)
    try:
        pool.map(trivial, range(200))
        # One submission per task, as every framework here gets them (map would ship them in chunks).
        t0 = time.perf_counter()
        pending = [pool.apply_async(trivial, (i,)) for i in range(total)]
        out = [p.get() for p in pending]
        result.tps = total / (time.perf_counter() - t0)
        assert len(out) == total
        for _ in range(WARMUP_SEQUENTIAL):
            pool.apply_async(started).get()
        result.start_ms, result.rt_ms = _sequential_times(lambda: pool.apply_async(started).get(), sequential)
    finally:
        # Not `with Pool()`, whose terminate() SIGTERMs the idle workers: once one of them left a worker
        # blocked for good on the task queue's lock, and the run hung there. Closed, they just exit.
        pool.close()
        pool.join()
    return result


def bench_dask(total: int, sequential: int) -> Result:
    """Dask distributed: LocalCluster of 2 worker processes, 1 thread each."""
    result = Result("dask distributed")
    try:
        from dask.distributed import Client
    except ImportError as exc:
        result.skipped = f"skipped, not installed ({exc}); pip install 'dask[distributed]'"
        return result
    try:
        with (
            dask_local_cluster() as cluster,
            Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            client.gather(client.map(trivial, range(500), pure=False))
            t0 = time.perf_counter()
            out = client.gather(client.map(trivial, range(total), pure=False))
            result.tps = total / (time.perf_counter() - t0)
            assert len(out) == total
            for _ in range(WARMUP_SEQUENTIAL):
                client.submit(started, pure=False).result()
            result.start_ms, result.rt_ms = _sequential_times(
                lambda: client.submit(started, pure=False).result(), sequential
            )
    except Exception as exc:
        result.skipped = f"skipped, could not run: {type(exc).__name__}: {exc}"
    return result


def bench_ray(root: Path, total: int, sequential: int) -> Result:
    """Ray: a local instance with 2 CPUs."""
    result = Result("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        result.skipped = f"skipped, not installed ({exc}); pip install ray"
        return result
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _node_ip_address=HOST,
            _temp_dir=str(root / "ray"),
        )
    except Exception as exc:
        result.skipped = f"skipped, could not start: {type(exc).__name__}: {exc}"
        return result
    try:
        remote_trivial = ray.remote(trivial)
        remote_started = ray.remote(started)
        ray.get([remote_trivial.remote(i) for i in range(500)])
        t0 = time.perf_counter()
        out = ray.get([remote_trivial.remote(i) for i in range(total)])
        result.tps = total / (time.perf_counter() - t0)
        assert len(out) == total
        for _ in range(WARMUP_SEQUENTIAL):
            ray.get(remote_started.remote())
        result.start_ms, result.rt_ms = _sequential_times(
            lambda: ray.get(remote_started.remote()), sequential
        )
    except Exception as exc:
        result.skipped = f"skipped, could not run: {type(exc).__name__}: {exc}"
    finally:
        ray.shutdown()
    return result


# --- report ---------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def _jobs(jobs: int) -> str:
    return f"{jobs} job{'s' if jobs > 1 else ''}"


def _cost(value: float | None, base: float | None) -> float | None:
    """How much lower a throughput is than `base`, in %: 12.0 means 12% fewer tasks/s."""
    return None if not value or not base else (1.0 - value / base) * 100.0


def _p50_cost(r: Result, base: Result) -> float | None:
    """How much longer `r`'s p50 start is than `base`'s, in %."""
    a, b = percentile(r.start_ms, 50), percentile(base.start_ms, 50)
    return None if a is None or not b else (a / b - 1.0) * 100.0


def report(results: list[Result], total: int, sequential: int, splits: Sequence[int], rounds: int) -> None:
    """The table, the targets, and swarm's ratio to each peer."""
    width = max(len(r.system) for r in results) + 2
    split_heads = "".join(f"{_jobs(j):>10}" for j in splits)
    head = (
        f"{'system':<{width}}{'tasks/s':>10}{split_heads}"
        f"{'p50 start':>12}{'p99 start':>12}{'p50 rt':>10}{'p99 rt':>10}"
    )
    say("")
    best = f"; swarm: best of {rounds} rounds" if rounds > 1 else ""
    say(f"{total:,} trivial tasks for throughput; {sequential} sequential tasks for latency (ms){best}")
    say(head)
    say("-" * len(head))
    per_split = "".join(f"{'>= ' + format(TARGET_TPS_ONE_JOB, ',.0f') if j == 1 else '':>10}" for j in splits)
    target = f"{'>= ' + format(TARGET_TPS, ',.0f'):>10}{per_split}{'< Ray':>12}"
    say(f"{'swarm goal':<{width}}{target}{'< ' + str(TARGET_P99_MS):>12}")
    for r in results:
        if r.skipped:
            say(f"{r.system:<{width}}{r.skipped}")
            continue
        by_jobs = "".join(f"{_fmt(r.best(j), ',.0f'):>10}" for j in splits)
        say(
            f"{r.system:<{width}}{_fmt(r.tps, ',.0f'):>10}{by_jobs}"
            f"{_fmt(percentile(r.start_ms, 50), '.2f'):>12}{_fmt(percentile(r.start_ms, 99), '.2f'):>12}"
            f"{_fmt(percentile(r.rt_ms, 50), '.2f'):>10}{_fmt(percentile(r.rt_ms, 99), '.2f'):>10}"
        )
    swarms = [r for r in results if r.security is not None and not r.skipped]
    peers = [r for r in results if r.security is None and not r.skipped]
    ray_p50 = next((percentile(p.start_ms, 50) for p in peers if p.system == "ray"), None)
    for s in swarms:
        p50 = percentile(s.start_ms, 50)
        p99 = percentile(s.start_ms, 99)
        one_job = s.best(1) if 1 in splits else None

        def verdict(met: bool | None) -> str:
            return "not measured" if met is None else "met" if met else "MISSED"

        verdicts = [
            f"throughput {verdict((s.tps or 0) >= TARGET_TPS)}",
            f"one job {verdict(None if one_job is None else one_job >= TARGET_TPS_ONE_JOB)}",
            f"p50 start below Ray's {verdict(None if p50 is None or ray_p50 is None else p50 < ray_p50)}"
            f" (aim < {TARGET_P50_MS} ms: {verdict(None if p50 is None else p50 < TARGET_P50_MS)})",
            f"p99 start {verdict(None if p99 is None else p99 < TARGET_P99_MS)}",
        ]
        say("")
        say(f"{s.system}: goals {', '.join(verdicts)}")
        for peer in peers:
            tps_ratio = (s.tps / peer.tps) if s.tps and peer.tps else None
            peer_p50 = percentile(peer.start_ms, 50)
            p50_ratio = p50 / peer_p50 if p50 is not None and peer_p50 else None
            say(
                f"  vs {peer.system}: throughput x{_fmt(tps_ratio, '.3g')} (higher is better), "
                f"p50 start x{_fmt(p50_ratio, '.3g')} (lower is better)"
            )
    for slots in sorted({s.slots for s in swarms}):
        security_report({s.security: s for s in swarms if s.slots == slots and s.security}, splits)


def security_report(by_security: dict[Security, Result], splits: Sequence[int]) -> None:
    """What security costs: each configuration against unsigned+plain, signatures alone (signed
    against unsigned over the same transport) against the budget, and the CPU per task by process."""
    if len(by_security) < 2:
        return
    slots = next(iter(by_security.values())).slots
    say("")
    say(
        f"cost of security, 2 nodes x {slots} slots: throughput cost = % fewer tasks/s (negative: more), "
        "p50 start = % longer; from the best round of each"
    )
    base = by_security.get(BASELINE)
    if base is not None:
        for security in SECURITIES:
            r = by_security.get(security)
            if r is None or security == BASELINE:
                continue
            costs = ", ".join(f"{_jobs(j)} {_pct(_cost(r.best(j), base.best(j)))}" for j in splits)
            name = f"{security.label}{' (default)' if security == SECURED else ''}"
            say(
                f"  {name:<22} vs unsigned+plain: throughput cost {costs}; "
                f"p50 start {_pct(_p50_cost(r, base))}"
            )
    for tls in (True, False):
        on = next((r for s, r in by_security.items() if s.signed and s.tls == tls), None)
        off = next((r for s, r in by_security.items() if not s.signed and s.tls == tls), None)
        if on is None or off is None:
            continue
        parts = []
        worst: float | None = None
        for j in splits:
            cost = _cost(on.best(j), off.best(j))
            if cost is not None:
                worst = cost if worst is None else max(worst, cost)
            # Each round measured both back to back: the spread of these says how much is noise.
            paired = [_cost(a, b) for a, b in zip(on.rounds.get(j, ()), off.rounds.get(j, ()), strict=False)]
            spread = "/".join(f"{c:+.0f}" for c in paired if c is not None)
            parts.append(f"{_jobs(j)} {_pct(cost)} (by round {spread or '-'})")
        verdict = "-" if worst is None else ("met" if worst <= SIGNING_BUDGET * 100 else "MISSED")
        say(f"  signatures alone over {'TLS' if tls else 'plain TCP'}: throughput cost {', '.join(parts)}")
        budget = f"budget <= {SIGNING_BUDGET:.0%} of throughput: {verdict}"
        say(f"    p50 start {_pct(_p50_cost(on, off))}; {budget}")
    for jobs in splits:
        rows = {s: r.cpu_us[jobs] for s in SECURITIES if (r := by_security.get(s)) and jobs in r.cpu_us}
        if not rows:
            continue
        roles = [role for role in ROLES if any(role in per for per in rows.values())]
        say(f"  CPU us per task by process, {_jobs(jobs)} (in the best round):")
        say(f"    {'':<16}" + "".join(f"{role:>16}" for role in [*roles, "total"]))
        for security, per in rows.items():
            cells = [per.get(role, 0.0) for role in roles]
            say(f"    {security.label:<16}" + "".join(f"{v:>16.0f}" for v in [*cells, sum(cells)]))


def anatomy_report(anatomy: Anatomy, results: Sequence[Result]) -> None:
    """Messages per task, what signing one and checking one costs, and so what Ed25519 costs a task."""
    label = anatomy.security.label
    secured = next((r for r in results if r.security == anatomy.security and not r.skipped), None)
    seal, check = anatomy.seal_us, anatomy.open_us
    say("")
    if len(seal) == 2 and len(check) == 2:
        say(
            f"per message in this process: seal {seal[True]:.1f} us signed / {seal[False]:.1f} us unsigned, "
            f"open {check[True]:.1f} us checked / {check[False]:.1f} us unchecked"
        )
    for run in anatomy.runs:
        say(
            f"messages per task, swarm {label}, {run.tasks} tasks as {_jobs(run.jobs)} (untimed; one extra "
            f"subscriber saw every publish): {run.published / run.tasks:.3f} publishes "
            f"({run.paired / run.tasks:.3f} of them paired), "
            f"{sum(run.sizes.values()) / run.tasks:,.0f} bytes"
        )
        for kind, n in run.counts.most_common():
            say(f"  {kind:<22} {n / run.tasks:8.3f} per task, {run.sizes[kind] / max(n, 1):8,.0f} bytes each")
        if run.delivered is not None:
            say(
                f"  delivered (the broker's count, the extra subscriber's copies taken out): "
                f"{run.delivered / run.tasks:.3f} per task, "
                f"{run.delivered / max(run.published, 1):.2f} receivers per message"
            )
        ed25519 = anatomy.ed25519_us(run)
        if ed25519 is None:
            continue
        say(
            f"  Ed25519: {ed25519:.0f} us of CPU per task (a signature per signed publish, a check per "
            "delivery of one)"
        )
        per = secured.cpu_us.get(run.jobs) if secured else None
        if per:
            spent = sum(per.values())
            say(
                f"  = {ed25519 / spent:.1%} of the {spent:.0f} us a task cost the whole {label} cluster as "
                f"{_jobs(run.jobs)} (its best round): {ed25519 / (spent - ed25519):.1%} more CPU than without"
            )
    for line in anatomy.profile:
        say(line)


# --- main -----------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _securities(text: str) -> list[Security]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in SECURITY]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(SECURITY)}, got {text!r}")
    return [SECURITY[n] for n in dict.fromkeys(names)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000, help="tasks for throughput (default 10000)")
    p.add_argument("--sequential", type=int, default=500, help="sequential tasks for latency (default 500)")
    p.add_argument("--skip", default="", help="comma-separated systems to leave out: swarm,pool,dask,ray")
    p.add_argument("--slots", type=_ints, default=[4], help="slots per swarm node; a list runs each")
    p.add_argument(
        "--jobs",
        type=_ints,
        default=[1, 20],
        help="concurrent SubmitJobs to split the tasks into (default 1,20)",
    )
    p.add_argument(
        "--security",
        type=_securities,
        default=list(SECURITIES),
        help=f"swarm configurations to measure (default all: {','.join(SECURITY)})",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every swarm configuration this many times, taking turns (each on a cluster of its "
        "own, all up at once); the best throughput counts, latency pools every round (default 3)",
    )
    p.add_argument(
        "--no-dissect",
        action="store_true",
        help="skip the untimed message counts and the signing micro-benchmark",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the message counts, one more untimed run under py-spy (client and both nodes): each "
        "one's share of Ed25519 and its top functions",
    )
    return p


class SwarmConfigurations:
    """Every configuration with one slot count, each on a cluster of its own, all of them up at once
    and measured in turns; a failure ends its configuration, not the others. A context manager.

    The clusters take turns run by run, `rounds` times (each round starting with another one), so
    that whatever else loads the machine falls on all of them alike; an idle cluster costs about 2%
    of a core (heartbeats), the same for each. Throughput keeps each round's figure (the table shows
    the best); latency pools every round's samples.
    """

    def __init__(self, root: Path, slots: int, securities: Sequence[Security]) -> None:
        self.root = root
        self.slots = slots
        # The default configuration first: it is what users run, and the one dissected at the end.
        self.order = sorted(securities, key=lambda s: s != SECURED)
        self.results = {s: Result(swarm_label(s, slots), security=s, slots=slots) for s in securities}
        self.clusters: dict[Security, SwarmCluster] = {}
        self.failed = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SwarmConfigurations:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _attempt(self, security: Security, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:
            self.failed = True
            say(f"swarm {security.label} with {self.slots} slots failed: {exc}")
            first = (str(exc).splitlines() or [""])[0][:200]
            self.results[security].skipped = f"FAILED: {type(exc).__name__}: {first}"
            self.clusters.pop(security, None)

    def _start(self, security: Security, warmup_tasks: int) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"{security.name}-slots{self.slots}-", dir=self.root))
        t0 = time.perf_counter()
        cluster = SwarmCluster(
            workdir, self.slots, tls=security.tls, signed=security.signed, loop=security.loop
        )
        self._stack.enter_context(cluster)
        say(f"  ready in {time.perf_counter() - t0:.1f}s ({cluster.url}); warming up")
        cluster.run(swarm_sequential(cluster, WARMUP_SEQUENTIAL))
        cluster.run(swarm_throughput(cluster, warmup_tasks, 1))
        self.clusters[security] = cluster

    def start(self, warmup_tasks: int) -> None:
        """Start and warm up every configuration's cluster."""
        for security in self.order:
            say(f"swarm {security.label}, {self.slots} slots per node: starting mosquitto and 2 nodes ...")
            self._attempt(security, functools.partial(self._start, security, warmup_tasks))

    def measure(self, total: int, sequential: int, splits: Sequence[int], rounds: int) -> None:
        """`rounds` rounds: latency of every configuration in turn, then throughput split by split."""
        for round_no in range(rounds):
            say(f"--- round {round_no + 1} of {rounds}")
            shift = round_no % len(self.order)
            turn = self.order[shift:] + self.order[:shift]
            count = _share(sequential, rounds, round_no)
            for security in turn:
                if count and security in self.clusters:
                    self._attempt(security, functools.partial(self._latency, security, count))
            for jobs in splits:
                for security in turn:
                    if security in self.clusters:
                        self._attempt(security, functools.partial(self._throughput, security, total, jobs))

    def _latency(self, security: Security, count: int) -> None:
        measure_latency(self.clusters[security], self.results[security], count)

    def _throughput(self, security: Security, total: int, jobs: int) -> None:
        measure_throughput(self.clusters[security], self.results[security], total, jobs)

    def dissect(self, total: int, splits: Sequence[int], profile: Path | None) -> Anatomy | None:
        """The untimed look inside the first configuration still running (the default one if it is):
        the messages of every split, the cost of a signature, and with `profile` a py-spy run."""
        running = [s for s in self.order if s in self.clusters]
        if not running:
            return None
        anatomy = Anatomy(running[0])
        cluster = self.clusters[anatomy.security]
        try:
            for jobs in splits:
                say(
                    f"untimed, swarm {anatomy.security.label}: the messages of {total} tasks as {_jobs(jobs)}"
                )
                anatomy.runs.append(cluster.run(count_messages(cluster, total, jobs)))
            signing_cost(cluster, anatomy)
            if profile is not None:
                say(f"untimed, swarm {anatomy.security.label}: one more run under py-spy ...")
                anatomy.profile = profile_run(cluster, total, max(splits), profile)
        except Exception as exc:  # a look inside, not a figure: report it and carry on
            say(f"  could not finish: {type(exc).__name__}: {exc}")
        return anatomy

    def final(self, splits: Sequence[int]) -> list[Result]:
        """The results, in the order the configurations were asked for."""
        for result in self.results.values():
            result.tps = max((b for j in splits if (b := result.best(j)) is not None), default=None)
        return list(self.results.values())


def run_swarm(root: Path, args: argparse.Namespace) -> tuple[list[Result], Anatomy | None, bool]:
    """Every swarm configuration for every slot count; the dissection once, on the first."""
    results: list[Result] = []
    anatomy: Anatomy | None = None
    failed = False
    for slots in args.slots:
        with SwarmConfigurations(root, slots, args.security) as configurations:
            configurations.start(min(WARMUP_TASKS, args.tasks))
            configurations.measure(args.tasks, args.sequential, args.jobs, args.rounds)
            if not args.no_dissect and anatomy is None:
                profile = root / "profile" if args.profile else None
                anatomy = configurations.dissect(args.tasks, args.jobs, profile)
        results += configurations.final(args.jobs)
        failed = failed or configurations.failed
    return results, anatomy, failed


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark that is not skipped and print the report."""
    args = _parser().parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"swarm", "pool", "dask", "ray"}
    if unknown:
        _parser().error(f"--skip: unknown system(s) {sorted(unknown)}")
    if args.rounds < 1:
        _parser().error("--rounds must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    results: list[Result] = []
    anatomy: Anatomy | None = None
    failed = False
    try:
        with sigterm_as_interrupt(), scratch_dir("swarm-bench-") as root:
            if "swarm" not in skip:
                results, anatomy, failed = run_swarm(root, args)
            if "pool" not in skip:
                say("multiprocessing.Pool(2) ...")
                results.append(bench_pool(args.tasks, args.sequential))
            if "dask" not in skip:
                say("dask distributed ...")
                results.append(bench_dask(args.tasks, args.sequential))
            if "ray" not in skip:
                say("ray ...")
                results.append(bench_ray(root, args.tasks, args.sequential))
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    if results:
        report(results, args.tasks, args.sequential, args.jobs, args.rounds if "swarm" not in skip else 1)
    if anatomy is not None:
        anatomy_report(anatomy, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
