"""Seed 004's suggestion accuracy and anomaly prediction, measured in the simulator, with naive baselines.

    python bench/insights.py                       # seeds 0-9, 3 cases of each kind per seed, 12 runs each
    python bench/insights.py --seeds 0-2 --cases 2 # a quick look

What is injected and how each figure is defined: `swarm/sim/insights.py` (module docstring). Suggestions
are scored as (case, step, action) pairs, `strict` against the injected truth only and `verified` with
the parallelism suggestions that a re-run in the simulator proved to save at least 10 % added to the
truth; alerts as (run, step) pairs. The naive rules run on the same simulated runs.
"""

from __future__ import annotations

import argparse
import os
import time

from swarm.sim.insights import ALERT_RULES, KINDS, SUGGESTION_RULES, Figures, run_experiment


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _row(label: str, p: float, r: float, f1: float | None = None) -> str:
    tail = f" {f1:6.3f}" if f1 is not None else ""
    return f"  {label:<34} {p:9.3f} {r:7.3f}{tail}"


def report(figures: Figures) -> str:
    """The figures as a table."""
    kinds = (*KINDS, "all")
    lines = [
        "cases: " + ", ".join(f"{k} {figures.cases[k]}" for k in kinds),
        "counts: " + ", ".join(f"{k} {v}" for k, v in figures.counts.items()),
        "",
        "suggestion accuracy ((case, step, action) pairs; the seed's figure is F1)",
        f"  {'rule / truth / case kind':<34} {'precision':>9} {'recall':>7} {'F1':>6}",
    ]
    for truth, table in (("strict", figures.strict), ("verified", figures.verified)):
        for rule in SUGGESTION_RULES:
            for kind in kinds:
                lines.append(_row(f"{rule} / {truth} / {kind}", *table[(rule, kind)]))
    lines += [
        "",
        "anomaly prediction ((run, step) alerts; the seed's figure needs both)",
        f"  {'baseline rule / case kind':<34} {'precision':>9} {'recall':>7}",
    ]
    for rule in ALERT_RULES:
        for kind in kinds:
            lines.append(_row(f"{rule} / {kind}", *figures.anomalies[(rule, kind)]))
    return "\n".join(lines)


def main() -> None:
    """Run the experiment and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0-9", help="a seed or an inclusive range, e.g. 0-9")
    parser.add_argument("--cases", type=int, default=3, help="cases of each kind per seed")
    parser.add_argument("--runs", type=int, default=12, help="runs of each case's DAG")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the seeds")
    args = parser.parse_args()
    started = time.perf_counter()
    figures = run_experiment(_seeds(args.seeds), args.cases, args.runs, jobs=args.jobs)
    print(report(figures))
    print(f"\n({time.perf_counter() - started:.1f} s wall)")


if __name__ == "__main__":
    main()
