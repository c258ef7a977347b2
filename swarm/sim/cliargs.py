"""The options of `swarm sim`; the commands themselves are in `swarm.sim.cli`.

This module imports nothing of the simulator, because the top-level parser that mounts it is built
by every `swarm` command.
"""

from __future__ import annotations

import argparse

__all__ = ["add_sim_parser"]


def add_sim_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `sim` and its subcommands to the top-level parser."""
    sim = subparsers.add_parser("sim", help="run the deterministic simulator")
    sub = sim.add_subparsers(dest="sim_command", required=True)
    sub.add_parser("list", help="list the named scenarios")
    sub.add_parser("faults", help="list the fault kinds a scenario's [[faults]] may name")
    for name, text in (("run", "run a scenario once"), ("replay", "re-run one seed exactly")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--scenario", required=True, help="a named scenario or a TOML file")
        p.add_argument("--seed", type=int, default=0 if name == "run" else None, required=name == "replay")
        p.add_argument("--nodes", type=int, help="scale the device mix to N devices")
        p.add_argument("--until", type=float, help="stop at this virtual time (skips the liveness check)")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
    sweep = sub.add_parser("sweep", help="run many seeds in parallel; print the first failure")
    sweep.add_argument("--scenario", required=True)
    sweep.add_argument("--seeds", type=int, required=True, help="run seeds 0 .. N-1")
    sweep.add_argument("--first-seed", type=int, default=0)
    sweep.add_argument("--nodes", type=int)
    sweep.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    bench = sub.add_parser("bench", help="measure the coordinator's scheduling cost per task")
    bench.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 5000])
    bench.add_argument("--tasks", type=int, default=2000)
