"""Trivial-task benchmark: swarm against Dask, Ray and `multiprocessing.Pool` on this machine.

What it measures, all in one run so the figures share the same hardware and load:

1. Throughput: N trivial tasks (default 10,000) from the first submit to the last result received at
   the submitter. For swarm these are `echo` tasks with a tiny payload, submitted with `SwarmClient` as
   one or more concurrent `SubmitJob`s (the split is an option; every split is reported) to a cluster
   of two real `swarm join` processes talking through a real mosquitto on a loopback port.
2. Submit-to-start latency of M sequential tasks (default 500), each submitted alone and awaited before
   the next: `started_at` as the task's worker process recorded it (`time.time()`, delivered to the
   client in the committed `TaskUpdate`) minus the client's `time.time()` just before the submit.
   The submit-to-result round trip is reported too.
3. The same work on Dask distributed (LocalCluster, 2 worker processes with 1 thread each), Ray
   (`num_cpus=2`) and `multiprocessing.Pool(2)`, the ceiling without any network. A peer that is not
   installed or does not start is skipped with the reason printed.

Swarm's targets are printed next to the figures: >= 3,000 tasks/s, p50 start < 2 ms, p99 start < 20 ms.

For each swarm throughput run it also prints the CPU time every process of the cluster spent per task
(the submitting client, mosquitto, each node and its executor workers; which node coordinates is
marked), so a run that misses the target shows where the cycles went. Slots per node matter little for
trivial tasks (the nodes' messaging is the cost, not running the task); 4 measured slightly best on a
2-core machine, hence the default.

Usage (from the repository root, with `pip install -e .[bench]`)::

    python bench/tasks.py                        # the full run
    python bench/tasks.py --tasks 2000 --sequential 100 --skip dask,ray
    python bench/tasks.py --slots 1,2,4 --jobs 1,20,100

Everything runs on loopback; every process and temporary directory it creates is removed at the end,
also after Ctrl-C or a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
)

from swarm.core.jobs import check_job
from swarm.jobspec import new_job_id
from swarm.messages import SubmitJob, TaskSpec
from swarm.runtime.client import SwarmClient

TARGET_TPS = 3000.0
TARGET_P50_MS = 2.0
TARGET_P99_MS = 20.0
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


@dataclass
class Result:
    """One system's figures; empty lists and None where a part was not measured."""

    system: str
    tps: float | None = None
    start_ms: list[float] = field(default_factory=list)
    rt_ms: list[float] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


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


async def _client(url: str) -> SwarmClient:
    """An entered `SwarmClient` that has seen the coordinator (the caller exits it)."""
    client = SwarmClient(url, CLUSTER)
    await client.__aenter__()
    deadline = time.monotonic() + 10.0
    while client.tracker.coordinator is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return client


async def swarm_throughput(url: str, total: int, jobs: int) -> float:
    """Tasks per second for `total` echo tasks split over `jobs` concurrent submissions."""
    client = await _client(url)
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


async def swarm_sequential(url: str, count: int) -> tuple[list[float], list[float]]:
    """Submit-to-start and submit-to-result times in ms of `count` tasks submitted one at a time."""
    client = await _client(url)
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


def bench_swarm(root: Path, slots: int, total: int, sequential: int, splits: Sequence[int]) -> Result:
    """One fresh cluster with `slots` per node: warm-up, latency, then throughput for every split."""
    result = Result(f"swarm (2 nodes x {slots} slots)")
    workdir = Path(tempfile.mkdtemp(prefix=f"slots{slots}-", dir=root))
    say(f"swarm, {slots} slots per node: starting mosquitto and 2 nodes ...")
    t0 = time.perf_counter()
    with SwarmCluster(workdir, slots) as cluster:
        say(f"  ready in {time.perf_counter() - t0:.1f}s ({cluster.url}); warming up")
        asyncio.run(swarm_sequential(cluster.url, WARMUP_SEQUENTIAL))
        asyncio.run(swarm_throughput(cluster.url, min(WARMUP_TASKS, total), 1))
        if sequential:
            result.start_ms, result.rt_ms = asyncio.run(swarm_sequential(cluster.url, sequential))
            say(
                f"  {sequential} sequential: start p50 {percentile(result.start_ms, 50):.2f} ms, "
                f"round trip p50 {percentile(result.rt_ms, 50):.2f} ms"
            )
        best: tuple[float, int] | None = None
        for jobs in splits:
            groups = {"client (this process)": [psutil.Process()], **cluster.process_groups()}
            before = cpu_seconds(groups)
            t0 = time.perf_counter()
            tps = asyncio.run(swarm_throughput(cluster.url, total, jobs))
            wall = time.perf_counter() - t0
            after = cpu_seconds(groups)
            note = f"{total} tasks as {jobs} concurrent job(s) of ~{total // jobs}: {tps:,.0f} tasks/s"
            say(f"  {note}")
            result.notes.append(note)
            spent = {name: after[name] - before.get(name, 0.0) for name in after}
            per_task = ", ".join(f"{name} {secs / total * 1e6:.0f}" for name, secs in spent.items())
            busy = sum(spent.values()) / (wall * (os.cpu_count() or 1))
            say(f"    CPU us/task: {per_task}; total {sum(spent.values()) / total * 1e6:.0f}")
            say(f"    machine busy {busy:.0%} of {os.cpu_count()} cores over {wall:.1f}s")
            if best is None or tps > best[0]:
                best = (tps, jobs)
    shutil.rmtree(workdir, ignore_errors=True)
    if best is not None:
        result.tps = best[0]
        result.system += f", {best[1]} job(s)"
    return result


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
    with multiprocessing.Pool(2) as pool:
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


def report(results: list[Result], total: int, sequential: int) -> None:
    """The table, the targets, and swarm's ratio to each peer."""
    width = max(len(r.system) for r in results) + 2
    head = f"{'system':<{width}}{'tasks/s':>10}{'p50 start':>12}{'p99 start':>12}{'p50 rt':>10}{'p99 rt':>10}"
    say("")
    say(f"{total:,} trivial tasks for throughput; {sequential} sequential tasks for latency (ms)")
    say(head)
    say("-" * len(head))
    target = f"{'>= ' + format(TARGET_TPS, ',.0f'):>10}{'< ' + str(TARGET_P50_MS):>12}"
    say(f"{'swarm target':<{width}}{target}{'< ' + str(TARGET_P99_MS):>12}")
    for r in results:
        if r.skipped:
            say(f"{r.system:<{width}}{r.skipped}")
            continue
        say(
            f"{r.system:<{width}}{_fmt(r.tps, ',.0f'):>10}"
            f"{_fmt(percentile(r.start_ms, 50), '.2f'):>12}{_fmt(percentile(r.start_ms, 99), '.2f'):>12}"
            f"{_fmt(percentile(r.rt_ms, 50), '.2f'):>10}{_fmt(percentile(r.rt_ms, 99), '.2f'):>10}"
        )
    swarms = [r for r in results if r.system.startswith("swarm") and not r.skipped]
    peers = [r for r in results if not r.system.startswith("swarm") and not r.skipped]
    for s in swarms:
        p50 = percentile(s.start_ms, 50)
        p99 = percentile(s.start_ms, 99)
        verdict = [
            f"throughput {'met' if (s.tps or 0) >= TARGET_TPS else 'MISSED'}",
            f"p50 start {'met' if p50 is not None and p50 < TARGET_P50_MS else 'MISSED'}",
            f"p99 start {'met' if p99 is not None and p99 < TARGET_P99_MS else 'MISSED'}",
        ]
        say("")
        say(f"{s.system}: targets {', '.join(verdict)}")
        for note in s.notes:
            say(f"  {note}")
        for peer in peers:
            tps_ratio = (s.tps / peer.tps) if s.tps and peer.tps else None
            peer_p50 = percentile(peer.start_ms, 50)
            p50_ratio = p50 / peer_p50 if p50 is not None and peer_p50 else None
            say(
                f"  vs {peer.system}: throughput x{_fmt(tps_ratio, '.3g')} (higher is better), "
                f"p50 start x{_fmt(p50_ratio, '.3g')} (lower is better)"
            )


# --- main -----------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000, help="tasks for throughput (default 10000)")
    p.add_argument("--sequential", type=int, default=500, help="sequential tasks for latency (default 500)")
    p.add_argument("--skip", default="", help="comma-separated systems to leave out: swarm,pool,dask,ray")
    p.add_argument("--slots", type=_ints, default=[4], help="slots per swarm node; a list runs each")
    p.add_argument(
        "--jobs", type=_ints, default=[1, 5, 20], help="concurrent SubmitJobs to split the tasks into"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark that is not skipped and print the report."""
    args = _parser().parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"swarm", "pool", "dask", "ray"}
    if unknown:
        _parser().error(f"--skip: unknown system(s) {sorted(unknown)}")
    logging.basicConfig(level=logging.WARNING)
    # aiomqtt's logger (set to WARNING when imported) says "N pending publish calls" under load.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    results: list[Result] = []
    failed = False
    try:
        with sigterm_as_interrupt(), scratch_dir("swarm-bench-") as root:
            if "swarm" not in skip:
                for slots in args.slots:
                    try:
                        results.append(bench_swarm(root, slots, args.tasks, args.sequential, args.jobs))
                    except Exception as exc:  # report it and still measure the peers
                        failed = True
                        say(f"swarm with {slots} slots failed: {exc}")
                        first = (str(exc).splitlines() or [""])[0][:200]
                        reason = f"FAILED: {type(exc).__name__}: {first}"
                        results.append(Result(f"swarm (2 nodes x {slots} slots)", skipped=reason))
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
        report(results, args.tasks, args.sequential)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
