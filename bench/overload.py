"""Issue 16 with real processes: N `swarm join` nodes on this machine, the coordinator SIGKILLed mid-batch.

For each N given, the benchmark starts a secured mosquitto and N nodes of one slot each (`_cluster.py`),
measures how long the cluster takes to form (every node alive, a coordinator known), submits a batch of
`sleep` tasks, SIGKILLs the acting coordinator (and its executor workers) a few seconds later, and
measures how long until a new coordinator announces itself, and whether every task completed exactly
once. It prints, per N: formation time, failover time, tasks done and duplicate commits, the load
average, memory per node (PSS, node process plus its workers, so shared pages count once) and log lines
per node. Every process it started is stopped when it ends, whatever happens (Ctrl-C included).

    python bench/overload.py --nodes 20 50          # then 100 on its own: it saturates a small machine
    python bench/overload.py --nodes 100 --tasks 3000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from _cluster import SwarmCluster, say, scratch_dir, sigterm_as_interrupt

from swarm.core.jobs import check_job
from swarm.ids import new_job_id
from swarm.messages import SubmitJob, TaskSpec
from swarm.runtime.client import SwarmClient


@dataclass
class Figures:
    """What one run measured."""

    nodes: int
    formation_s: float
    failover_s: float | None
    done: int
    tasks: int
    duplicates: int
    batch_s: float
    load: float
    pss_mib: float
    log_lines: float


def _sleep_job(tasks: int, seconds: float) -> SubmitJob:
    job_id = new_job_id()
    specs = tuple(TaskSpec(f"{job_id}.{i}", "sleep", {"seconds": seconds}) for i in range(tasks))
    job = SubmitJob(job_id, specs, kind="batch")
    check_job(job)
    return job


def _pss_mib(cluster: SwarmCluster) -> float:
    """Mean proportional set size of a node with its workers, in MiB (0 where the kernel will not say)."""
    sizes = []
    for proc in cluster.nodes:
        total = 0
        with contextlib.suppress(psutil.Error):
            node = psutil.Process(proc.pid)
            for p in (node, *node.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    total += getattr(p.memory_full_info(), "pss", 0)
        if total:
            sizes.append(total)
    return sum(sizes) / len(sizes) / 2**20 if sizes else 0.0


def _log_lines(cluster: SwarmCluster) -> float:
    counts = [len(log.read_bytes().splitlines()) for log in cluster.root.glob("w*.log")]
    return sum(counts) / max(len(counts), 1)


async def _wait_coordinator(client: SwarmClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.tracker.coordinator is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _run(cluster: SwarmCluster, tasks: int, seconds: float, kill_after: float, limit: float) -> Figures:
    client = cluster.client()
    await client.__aenter__()
    orphans: list[psutil.Process] = []
    try:
        await _wait_coordinator(client, 30.0)
        old, old_epoch = client.tracker.coordinator, client.tracker.epoch
        ids = {n["id"]: n["name"] for n in cluster.status().get("nodes", [])}
        job = _sleep_job(tasks, seconds)
        t0 = time.monotonic()
        batch = asyncio.create_task(client.submit(job, timeout=limit))
        await asyncio.sleep(kill_after)
        name = ids.get(old or "", cluster.coordinator_name)
        proc = cluster.nodes[cluster.names.index(name)]
        with contextlib.suppress(psutil.Error):
            orphans = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        say(f"  SIGKILLed coordinator {name} ({old}), epoch {old_epoch}, {killed - t0:.1f}s into the batch")
        failover: float | None = None
        while not batch.done() and time.monotonic() - killed < limit:
            t = client.tracker
            if failover is None and t.coordinator not in (None, old) and t.epoch > old_epoch:
                failover = time.monotonic() - killed
                say(f"  new coordinator {ids.get(t.coordinator or '', t.coordinator)} after {failover:.1f}s")
            await asyncio.sleep(0.05)
        if not batch.done():
            batch.cancel()
        elif batch.exception() is not None:
            say(f"  the batch did not finish: {batch.exception()}")
        elapsed = time.monotonic() - t0
        # What the client saw committed, finished or not.
        progress = client.tracker.jobs[job.job_id]
        done = sum(u.state == "done" for u in progress.updates.values())
        return Figures(
            cluster.node_count,
            0.0,
            failover,
            done,
            tasks,
            progress.duplicates,
            elapsed,
            os.getloadavg()[0],
            _pss_mib(cluster),
            _log_lines(cluster),
        )
    finally:
        await client.__aexit__(None, None, None)
        for child in orphans:
            with contextlib.suppress(psutil.Error):
                child.kill()


def measure(
    nodes: int, tasks: int, seconds: float, kill_after: float, limit: float, logs: Path | None = None
) -> Figures:
    """One cluster of `nodes` nodes: form, submit, kill the coordinator, wait, clean up (keeping the
    nodes' logs under `logs`, when given)."""
    with scratch_dir(f"swarm-overload-{nodes}-") as root:
        t0 = time.monotonic()
        try:
            with SwarmCluster(root, slots=1, nodes=nodes) as cluster:
                formation = time.monotonic() - t0
                say(f"{nodes} nodes formed a cluster in {formation:.1f}s")
                figures = asyncio.run(_run(cluster, tasks, seconds, kill_after, limit))
                figures.formation_s = formation
                return figures
        finally:
            if logs is not None:
                target = logs / f"n{nodes}"
                target.mkdir(parents=True, exist_ok=True)
                for log in root.glob("*.log"):
                    shutil.copy(log, target / log.name)


def main() -> None:
    """Parse the arguments, run each size in turn, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--task-seconds", type=float, default=0.05)
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds into the batch")
    parser.add_argument("--limit", type=float, default=600.0, help="give up on a batch after this")
    parser.add_argument("--logs", type=Path, help="keep the nodes' logs in this directory")
    args = parser.parse_args()
    rows = []
    with sigterm_as_interrupt():
        for n in args.nodes:
            rows.append(measure(n, args.tasks, args.task_seconds, args.kill_after, args.limit, args.logs))
    say("")
    say("nodes  formed  failover  tasks done  dup  batch   load  PSS/node  log lines/node")
    for f in rows:
        fo = f"{f.failover_s:7.1f}s" if f.failover_s is not None else "   never"
        say(
            f"{f.nodes:5d}  {f.formation_s:5.1f}s  {fo}  {f.done:5d}/{f.tasks:<5d} {f.duplicates:3d}"
            f"  {f.batch_s:5.1f}s {f.load:5.1f}  {f.pss_mib:5.0f} MiB  {f.log_lines:8.0f}"
        )


if __name__ == "__main__":
    main()
