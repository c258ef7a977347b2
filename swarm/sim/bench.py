"""The coordinator's scheduling cost per task as the cluster grows (`swarm sim bench`).

One real `NodeMachine` is made coordinator of a cluster of N members known only by their heartbeats;
a job of T tasks is then submitted and the one `handle` call that accepts and places it is timed. T is
kept at or below the cluster's room (`queue_limit` per member), so every task is placed in that call and
the figure is the cost of placing one task among N candidates. If the cost grows with N, placement scans
the whole membership per task.
"""

from __future__ import annotations

import random
import time

from swarm import topics
from swarm.core.config import CoreConfig
from swarm.core.events import MessageReceived, Publish, Tick
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Claim, Envelope, Heartbeat, SubmitJob, TaskSpec

__all__ = ["print_curve", "scheduling_cost"]


def _accept(spec: TaskSpec) -> str | None:
    return None


def scheduling_cost(nodes: int, tasks: int, seed: int = 0) -> float:
    """Seconds of coordinator CPU per placed task with `nodes` members."""
    cfg = CoreConfig(heartbeat_interval=1.0, failure_timeout=4.0, election_timeout=6.0, tick_interval=0.25)
    rng = random.Random(seed)
    machine = NodeMachine(
        "coord", "coord", cfg, rng, _accept, DeviceStatus(simulated_capabilities("coord"), 0.1, 2048), 0, 0.0
    )
    now = 0.0
    claimed: list[Claim] = []
    while not claimed:
        now += cfg.tick_interval
        for i in range(nodes):
            hb = Heartbeat(
                f"n{i:05d}",
                simulated_capabilities(f"n{i:05d}"),
                cfg.slots,
                0,
                rng.random(),
                2048,
                int(now * 4),
            )
            machine.handle(
                MessageReceived(topics.heartbeat(f"n{i:05d}"), Envelope(1, "b", f"n{i:05d}", 0, "h", hb)), now
            )
        effects = machine.handle(Tick(), now)
        claimed = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, Claim)]
    claim = Envelope(1, "b", "coord", 1, "c", claimed[0])
    machine.handle(MessageReceived(topics.ELECTION, claim), now)
    assert machine.scheduler is not None, "the bench coordinator did not take office"
    placed = min(tasks, nodes * cfg.queue_limit(cfg.slots) // 2)
    job = SubmitJob("bench", tuple(TaskSpec(f"t{i}", "echo", {"i": i}) for i in range(placed)))
    started = time.perf_counter()
    machine.handle(MessageReceived(topics.job_spec("bench"), Envelope(1, "b", "client", 0, "s", job)), now)
    elapsed = time.perf_counter() - started
    running = sum(1 for t in machine.scheduler.tasks.values() if t.state == "running")
    return elapsed / max(running, 1)


def print_curve(sizes: list[int], tasks: int) -> None:
    """Print microseconds per task for each cluster size, and the ratio to the smallest."""
    base: float | None = None
    print(f"{'nodes':>7} {'us/task':>10} {'x smallest':>11}")
    for n in sizes:
        cost = scheduling_cost(n, tasks) * 1e6
        base = base or cost
        print(f"{n:7} {cost:10.1f} {cost / base:11.1f}")
