"""Run a scenario for one seed: build the world, schedule workload, churn and faults, check, report.

Every fault's target and timing is drawn from the world's seeded RNG when the fault fires, so the same
seed replays the same run. After `duration`, every fault is undone (links healed, speeds restored, stopped
devices restarted) and the run goes on for at most `drain` seconds until every submitted task has a final
state; the liveness invariant is then checked.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from swarm.messages import RetryPolicy, SubmitJob, TaskSpec
from swarm.sim.dags import submit_random_runs
from swarm.sim.faults import Crash, NodeFault, Partition, ScheduledFault, Slow
from swarm.sim.invariants import Checker
from swarm.sim.mapreduce import generate_corpus
from swarm.sim.scenario import Scenario, Workload
from swarm.sim.schedules import CronDriver
from swarm.sim.world import SimNode, SimWorld

__all__ = ["SimReport", "replay_command", "run_scenario"]


@dataclass(slots=True)
class SimReport:
    """What a run did, for people (`format_report`) and machines (`--json`)."""

    seed: int
    virtual_time: float
    wall_time: float
    events: int
    tasks: int
    completed: int
    scenario: str = ""
    nodes: int = 0
    failed: int = 0
    retried: int = 0
    trace_hash: str = ""
    coordinators: dict[int, str] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    #: Faults that struck, by kind (`swarm.sim.faults`).
    fault_kinds: dict[str, int] = field(default_factory=dict)
    invariant_checks: int = 0
    outside_design: list[str] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    liveness_checked: bool = True
    mapreduce: dict[str, int] = field(default_factory=dict)
    dags: dict[str, int] = field(default_factory=dict)
    #: Epoch writes a full disk refused, and claims withheld for want of their epoch on disk.
    refused_writes: int = 0
    withheld_claims: int = 0
    #: Most events one step of a node took (`SimWorld.batch_limit`).
    batch_limit: int = 1

    @property
    def coordinator_changes(self) -> int:
        """Epochs acted for after the first."""
        return max(len(self.coordinators) - 1, 0)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        data = dataclasses.asdict(self)
        data["coordinators"] = {str(k): v for k, v in self.coordinators.items()}
        data["coordinator_changes"] = self.coordinator_changes
        return data


def replay_command(scenario: str, seed: int, nodes: int | None = None, until: float | None = None) -> str:
    """The command line that reproduces a run."""
    cmd = f"swarm sim replay --scenario {scenario} --seed {seed}"
    if nodes is not None:
        cmd += f" --nodes {nodes}"
    if until is not None:
        cmd += f" --until {until:g}"
    return cmd


def run_scenario(
    scenario: Scenario,
    seed: int,
    nodes: int | None = None,
    until: float | None = None,
    setup: Callable[[SimWorld], None] | None = None,
) -> SimReport:
    """Run `scenario` with `seed`; raises `InvariantViolation` (with a replay command) when one breaks.

    `setup` may change the world before anything runs (tests use it to break a policy on purpose).
    """
    started = time.perf_counter()
    if nodes is not None:
        scenario = scenario.with_nodes(nodes)
    world = SimWorld(
        seed,
        scenario.core_config(),
        max_queued=scenario.max_queued,
        cpu=scenario.cpu,
        session_expiry=scenario.session_expiry,
        keep_retained=scenario.keep_retained,
    )
    checker = Checker(world, replay_command(scenario.name, seed, nodes, until))
    run = _Run(scenario, world, checker)
    if setup is not None:
        setup(world)
    run.start()
    end = scenario.duration if until is None else min(until, scenario.duration)
    world.run_until(end)
    liveness = until is None or until > scenario.duration
    if liveness:
        run.undo_faults()
        limit = scenario.duration + scenario.drain if until is None else until
        world.run_until(limit, stop=lambda: checker.done() >= checker.submitted and run.schedules_settled())
        checker.final_check()
        run.check_dags()
    return run.report(seed, time.perf_counter() - started, liveness)


class _Run:
    """The schedule of one run: devices, churn, workload, faults."""

    def __init__(self, scenario: Scenario, world: SimWorld, checker: Checker) -> None:
        self.sc = scenario
        self.world = world
        self.checker = checker
        self.faults: list[str] = []
        self.fault_kinds: Counter[str] = Counter()
        # The undo of every fault in force, by the order it struck in: undone after its duration, and
        # whatever is left when the fault period ends.
        self.in_force: dict[int, Callable[[], None]] = {}
        self._strikes = count()
        self.groups: dict[str, str] = {}
        self.churning = True
        self.cron: list[CronDriver] = []
        self.dag_stats: dict[str, int] = {}

    def start(self) -> None:
        w, sc = self.world, self.sc
        w.roster_size = sum(group.count for group in sc.devices)
        for group in sc.devices:
            for i in range(group.count):
                node_id = f"{group.profile.name}-{len(self.groups):04d}"
                # Offsets are kept positive: a real clock never reads below zero (see docs/simulator.md).
                skew = w.rng.uniform(0.0, 2 * group.skew_s) if group.skew_s else 0.0
                node = w.add_node(node_id, group.profile, skew=skew)
                self.groups[node_id] = group.profile.name
                if group.profile.mean_up_s is not None:
                    self._churn(node, group.leave_fraction)
                del i
        for j, load in enumerate(sc.workload):
            w.schedule(load.at, lambda j=j, load=load: self._submit(j, load))  # type: ignore[misc]
        for fault in sc.faults:
            w.schedule(fault.at, lambda f=fault: self._strike(f))  # type: ignore[misc]
        r, rng = sc.rates, w.rng
        random_faults: tuple[tuple[float, tuple[float, float], Callable[[], NodeFault]], ...] = (
            (r.crash, r.down_s, lambda: Crash(keep_disk=rng.random() >= r.lose_disk)),
            (r.partition, r.partition_s, lambda: Partition(mode=rng.choice(("cut", "cut", "out")))),
            (r.slow, r.slow_s, lambda: Slow(factor=rng.uniform(2.0, 10.0))),
        )
        for rate, span, make in random_faults:
            if rate > 0:
                self._poisson(rate, span, make)

    # --- workload -----------------------------------------------------------------------------------

    def _submit(self, index: int, load: Workload) -> None:
        if load.kind == "mapreduce":
            self._submit_mapreduce(index, load)
            return
        if load.kind == "dag":
            self._submit_dags(index, load)
            return
        rng = self.world.rng
        per_job = max(load.tasks // load.jobs, 1)
        retry = RetryPolicy(max_retries=load.max_retries, base=0.2, cap=5.0)
        for j in range(load.jobs):
            job_id = f"w{index}-j{j}"
            specs = tuple(
                TaskSpec(
                    f"{job_id}-t{t}",
                    "echo",
                    {"i": t, "cost": rng.uniform(*load.cost), "fail_p": load.fail_p},
                    priority=rng.randint(*load.priority),
                    timeout=load.timeout,
                    retry=retry,
                )
                for t in range(per_job)
            )
            self.checker.submit(SubmitJob(job_id, specs, kind="batch", submitted_by="client"))
        self.world.note(f"submitted {load.jobs} job(s), {per_job * load.jobs} tasks")

    def _submit_mapreduce(self, index: int, load: Workload) -> None:
        """Word counts over corpora drawn from the run's seed, as `swarm submit mapreduce` builds them."""
        w = self.world
        for j in range(load.jobs):
            corpus = generate_corpus(w.rng.getrandbits(32), load.words)
            job = w.mapreduce.submit(
                f"w{index}-mr{j}", corpus, load.maps, load.reduces, load.cost, load.max_retries, load.timeout
            )
            # Stamped with the submitter as `SwarmClient.submit` stamps it.
            self.checker.submit(dataclasses.replace(job, submitted_by=self.checker.client_id))
        w.note(f"submitted {load.jobs} MapReduce job(s) of {load.maps} maps and {load.reduces} reduces")

    def _submit_dags(self, index: int, load: Workload) -> None:
        """Runs of random DAGs (swarm.sim.dags), or, with `cron`, DAGs scheduled from now on."""
        w = self.world
        if load.cron:
            shape = {
                "max_steps": load.steps,
                "fan_out": load.fan_out,
                "max_retries": load.max_retries,
                "cost": load.cost,
                "fail_p": load.fail_p,
            }
            for j in range(load.jobs):
                driver = CronDriver.create(
                    w,
                    self.checker,
                    f"w{index}-cron{j}",
                    load.cron,
                    load.catchup,
                    w.now,
                    self.sc.duration,
                    shape,
                )
                self.cron.append(driver)
                driver.start()
            w.note(f"scheduled {load.jobs} DAG(s) at {load.cron!r}")
            return
        jobs = submit_random_runs(
            w.rng,
            w.dags,
            f"w{index}",
            load.jobs,
            load.steps,
            load.fan_out,
            load.max_retries,
            load.cost,
            load.fail_p,
            self.checker.client_id,
        )
        for job in jobs:
            self.checker.submit(job)
        w.note(f"submitted {load.jobs} DAG run(s), {sum(len(j.tasks) for j in jobs)} tasks")

    def schedules_settled(self) -> bool:
        """Whether every scheduled slot has been submitted (the drain waits for that too)."""
        return all(driver.settled() for driver in self.cron)

    def check_dags(self) -> None:
        """The DAG invariant (swarm.sim.dags) and the schedule invariant (swarm.sim.schedules)."""
        w, c = self.world, self.checker
        if not w.dags.runs and not self.cron:
            return
        committed = {job_id: progress.updates for job_id, progress in c.tracker.jobs.items()}
        problems, stats = w.dags.check(committed)
        for driver in self.cron:
            problems += driver.check(c.tracker.jobs)
            for key, value in driver.stats().items():
                stats[key] = stats.get(key, 0) + value
        self.dag_stats = stats
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            first = problems[0].split(" ")[0]
            # A problem of one task starts with its id (`<run id>.<step>`); a schedule's with a run id.
            task_id = first if "." in first.rpartition("@")[2] else None
            c._violation(f"DAG invariant: {problems[0]}{more}", task_id=task_id)

    # --- faults -------------------------------------------------------------------------------------

    def _churn(self, node: SimNode, leave_fraction: float) -> None:
        """Alternate exponentially distributed up and down periods, as the device profile says."""
        w, p = self.world, node.profile
        assert p.mean_up_s is not None and p.mean_down_s is not None
        up, down = p.mean_up_s, p.mean_down_s

        def go_down() -> None:
            if not self.churning or not node.up:
                return
            if w.rng.random() < leave_fraction:
                w.leave(node.node_id)
            else:
                w.crash(node.node_id)
            w.schedule(w.now + w.rng.expovariate(1 / down), come_back)

        def come_back() -> None:
            if not node.up:
                w.restart(node.node_id, keep_disk=w.rng.random() >= self.sc.rates.lose_disk)
            if self.churning:
                w.schedule(w.now + w.rng.expovariate(1 / up), go_down)

        w.schedule(w.now + w.rng.expovariate(1 / up), go_down)

    def _poisson(self, rate: float, span: tuple[float, float], make: Callable[[], NodeFault]) -> None:
        """Faults made by `make` on random nodes, `rate` a second, each lasting a time drawn from `span`."""
        w = self.world

        def fire() -> None:
            if w.now > self.sc.duration or not self.churning:
                return
            self._strike(ScheduledFault(w.now, make(), "random", w.rng.uniform(*span)))
            w.schedule(w.now + w.rng.expovariate(rate), fire)

        w.schedule(w.rng.expovariate(rate), fire)

    def _target(self, spec: str) -> SimNode | None:
        w = self.world
        if spec == "coordinator":
            coords = w.coordinators()
            return coords[0] if coords else None
        if spec.startswith("random"):
            profile = spec.partition(":")[2]
            live = [n for n in w.nodes.values() if n.up and (not profile or n.profile.name == profile)]
            return w.rng.choice(live) if live else None
        return w.nodes.get(spec)

    def _strike(self, scheduled: ScheduledFault) -> None:
        """Apply a fault now and schedule its undo; a fault that changed nothing (its node already down)
        is neither counted nor undone."""
        w, fault = self.world, scheduled.fault
        notes = w.notes
        undo: Callable[[], None]
        if isinstance(fault, NodeFault):
            node = self._target(scheduled.target)
            if node is None:
                return
            fault.apply(w, node)
            undo = lambda: fault.undo(w, node)  # noqa: E731
        else:
            fault.apply(w)
            undo = lambda: fault.undo(w)  # noqa: E731
        if w.notes == notes:
            return
        self.faults.append(w.trace[-1])
        self.fault_kinds[fault.name] += 1
        strike = next(self._strikes)
        self.in_force[strike] = undo
        lasts = scheduled.lasts
        if lasts is not None:
            w.schedule(w.now + lasts, lambda: self._end(strike))

    def _end(self, strike: int) -> None:
        undo = self.in_force.pop(strike, None)
        if undo is not None:
            undo()

    def undo_faults(self) -> None:
        """End of the fault period: undo every fault still in force, latest first, and restart the
        devices churn left down."""
        w = self.world
        self.churning = False
        for strike in sorted(self.in_force, reverse=True):
            self._end(strike)
        for node in w.nodes.values():
            if not node.up:
                w.restart(node.node_id, keep_disk=True)

    # --- report -------------------------------------------------------------------------------------

    def report(self, seed: int, wall: float, liveness: bool) -> SimReport:
        w, c = self.world, self.checker
        updates = [u for job in c.tracker.jobs.values() for u in job.updates.values()]
        per_class: dict[str, dict[str, float]] = {}
        for node in w.nodes.values():
            row = per_class.setdefault(
                node.profile.name, {"nodes": 0, "tasks_done": 0, "busy_s": 0.0, "slot_s": 0.0}
            )
            uptime = node.uptime + (w.now - node.up_since if node.up else 0.0)
            row["nodes"] += 1
            row["tasks_done"] += node.tasks_done
            row["busy_s"] += node.busy
            row["slot_s"] += uptime * w.config.slots
        for row in per_class.values():
            row["utilisation"] = round(row.pop("busy_s") / max(row.pop("slot_s"), 1e-9), 4)
        return SimReport(
            seed=seed,
            virtual_time=round(w.now, 6),
            wall_time=wall,
            events=w.events_processed,
            batch_limit=w.batch_limit,
            tasks=c.submitted,
            completed=sum(u.state == "done" for u in updates),
            scenario=self.sc.name,
            nodes=len(w.nodes),
            failed=sum(u.state != "done" for u in updates),
            retried=sum(max(u.attempt - 1, 0) for u in updates),
            trace_hash=w.trace_hash,
            coordinators=dict(c.acting),
            faults=self.faults,
            fault_kinds=dict(self.fault_kinds),
            refused_writes=w.refused_writes,
            withheld_claims=w.withheld_claims,
            invariant_checks=c.checks,
            outside_design=c.outside_design,
            per_class=per_class,
            liveness_checked=liveness,
            mapreduce=(
                w.mapreduce.stats.as_dict() | {"jobs_checked": len(c.mapreduce_checked)}
                if w.mapreduce.jobs
                else {}
            ),
            dags=self.dag_stats,
        )
