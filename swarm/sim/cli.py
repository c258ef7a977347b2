"""`swarm sim list | faults | run | sweep | replay | bench`: the simulator from the command line.

`swarm/cli.py` mounts the options with `swarm.sim.cliargs.add_sim_parser(subparsers)` and dispatches
here, to `run_sim_command(args)`. The options live apart so that building the parser (which every
`swarm` command does) does not import the simulator: that took 0.16 s of every `swarm submit`.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from swarm.errors import ConfigError
from swarm.sim.faults import describe_faults
from swarm.sim.invariants import InvariantViolation
from swarm.sim.runner import SimReport, replay_command, run_scenario
from swarm.sim.scenario import load_scenario, named_scenarios

__all__ = ["format_report", "run_sim_command"]


def run_sim_command(args: argparse.Namespace) -> int:
    """Carry out a `swarm sim` subcommand; the exit status is non-zero on a violation or bad input."""
    try:
        match args.sim_command:
            case "list":
                return _list()
            case "faults":
                print("\n".join(describe_faults()))
                return 0
            case "run" | "replay":
                return _run(args)
            case "sweep":
                return _sweep(args)
            case "bench":
                from swarm.sim.bench import print_curve

                print_curve(args.nodes, args.tasks)
                return 0
            case _:
                raise ValueError(f"unknown sim command {args.sim_command!r}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _list() -> int:
    names = list(named_scenarios())
    width = max(map(len, names), default=0)
    for name in names:
        sc = load_scenario(name)
        tasks = sum(w.task_count for w in sc.workload)
        print(f"{name:{width}} {sc.node_count:5} nodes {tasks:7} tasks  {sc.description}")
    return 0


def _run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    try:
        report = run_scenario(scenario, args.seed, args.nodes, args.until)
    except InvariantViolation as exc:
        print(f"INVARIANT VIOLATED\n{exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


def _one(job: tuple[str, int, int | None]) -> tuple[int, str | None, float]:
    name, seed, nodes = job
    try:
        report = run_scenario(load_scenario(name), seed, nodes)
    except InvariantViolation as exc:
        return seed, str(exc), 0.0
    return seed, None, report.wall_time


def _sweep(args: argparse.Namespace) -> int:
    load_scenario(args.scenario)  # fail fast on a bad name or file
    jobs = [(args.scenario, s, args.nodes) for s in range(args.first_seed, args.first_seed + args.seeds)]
    failures: list[tuple[int, str]] = []
    walls: list[float] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for seed, error, wall in pool.map(_one, jobs):
            if error is not None:
                failures.append((seed, error))
            else:
                walls.append(wall)
    mean = sum(walls) / len(walls) if walls else 0.0
    print(f"{args.scenario}: {len(walls)} of {len(jobs)} seeds passed ({mean:.2f}s wall per seed)")
    if failures:
        seed, error = failures[0]
        print(f"first failing seed: {seed} ({len(failures)} failed)\n{error.splitlines()[0]}")
        print(f"replay: {replay_command(args.scenario, seed, args.nodes)}")
        return 1
    return 0


def format_report(r: SimReport) -> str:
    """The report as `swarm sim run` prints it."""
    lines: list[Any] = [
        f"scenario {r.scenario}, seed {r.seed}, {r.nodes} nodes",
        f"virtual time   {r.virtual_time:10.1f} s    wall time {r.wall_time:.2f} s "
        f"({r.virtual_time / max(r.wall_time, 1e-9):.0f}x real time)",
        f"events         {r.events:10}    up to {r.batch_limit} per step",
        f"tasks          {r.tasks} submitted, {r.completed} completed, {r.retried} retried, "
        f"{r.failed} failed",
        f"coordinators   {r.coordinator_changes} change(s): "
        + ", ".join(f"epoch {e} {n}" for e, n in sorted(r.coordinators.items())),
        f"faults         {len(r.faults)} injected"
        + "".join(f", {n} {kind}" for kind, n in sorted(r.fault_kinds.items())),
        f"invariants     {r.invariant_checks} checks passed"
        + ("" if r.liveness_checked else " (liveness not checked: stopped by --until)"),
    ]
    if r.refused_writes:
        lines.append(
            f"full disks     {r.refused_writes} epoch write(s) refused, {r.withheld_claims} claim(s) withheld"
        )
    if r.outside_design:
        lines.append(
            f"outside design {len(r.outside_design)} breach(es) after a fault beyond assumption A, "
            f"e.g. {r.outside_design[0]}"
        )
    if r.mapreduce:
        m = r.mapreduce
        lines.append(
            f"mapreduce      {m['maps']} map and {m['reduces']} reduce attempts, {m['fetched']} runs "
            f"fetched, {m['recomputed']} recomputed; {m['jobs_checked']} job(s) matched the reference"
        )
    lines.append("device class   nodes  tasks done  utilisation")
    for name, row in sorted(r.per_class.items()):
        lines.append(
            f"  {name:12} {int(row['nodes']):5}  {int(row['tasks_done']):10}  {row['utilisation']:10.1%}"
        )
    lines.append(f"trace hash     {r.trace_hash}")
    return "\n".join(str(x) for x in lines)
