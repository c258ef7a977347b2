"""A word count whose data crosses a shaped link between two hosts: MB/s against the link's limit.

Two network namespaces joined by a veth pair stand for two machines (`tests/integration/netns.py`):
host a holds the broker, node `a` and the submitter with the corpus; host b holds node `b`. Every split
node `b` maps comes over the link from the submitter, every map output a reducer on the other host reads
crosses it, and every output node `b` reduces goes back over it. The job runs on the link unshaped,
shaped like wired gigabit (1 Gbit/s, 1 ms) and like Wi-Fi (100 Mbit/s, 20 ms); for each it prints the
time, the bytes the link carried (the veth's counters, both directions), those bytes per second against
the link's rate (the physical ceiling), and the time lost to the shaping (against the unshaped run).

The rate is shaped with tc `tbf`; the delay needs the kernel's `sch_netem`, and where that is missing
the run says so and goes on with the rate alone. Needs root (namespaces) and mosquitto.

    sudo python bench/netshuffle.py --size 64M
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _cluster import parse_size, say, scratch_dir, size_label
from wordcount import write_corpus

from tests.conftest import MosquittoServer
from tests.integration.netns import Host, TwoHosts, broker_in, unavailable
from tests.integration.nodes import Cluster

#: (label, rate in Mbit/s, delay in ms); None: the link as the kernel makes it.
LINKS: list[tuple[str, float | None, float]] = [
    ("unshaped veth", None, 0.0),
    ("1 Gbit/s, 1 ms", 1000.0, 1.0),
    ("100 Mbit/s, 20 ms", 100.0, 20.0),
]


@dataclass
class Figures:
    """One run over one link."""

    link: str
    rate_mbit: float | None
    delay_applied: bool
    seconds: float
    link_bytes: int


def _link_bytes(host: Host) -> int:
    """Bytes through `host`'s end of the link so far, both directions."""
    total = 0
    for direction in ("rx", "tx"):
        path = f"/sys/class/net/{host.device}/statistics/{direction}_bytes"
        done = subprocess.run([*host.prefix, "cat", path], capture_output=True, text=True, check=True)
        total += int(done.stdout)
    return total


def _run(cluster: Cluster, hosts: TwoHosts, inputs: list[Path], out: Path, reduces: int) -> float:
    args = ["submit", "mapreduce", "--app", "wordcount", "--input", *map(str, inputs)]
    args += ["--reduces", str(reduces), "--output", str(out), "--wait"]
    # One map per corpus file, so that both hosts map and every reducer's fetches cross the link: the
    # planner would pack the corpus's small files into fewer splits.
    args += ["--split-size", str(max(path.stat().st_size for path in inputs))]
    started = time.perf_counter()
    done = cluster.cli(*args, timeout=3600, host=hosts.a)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the job failed: {done.stderr}\n{cluster.logs()}")
    summary = json.loads(done.stdout)
    if not summary.get("ok"):
        raise RuntimeError(f"the job did not succeed: {summary}")
    return seconds


def measure(size: int, reduces: int, root: Path) -> list[Figures]:
    """Run the word count over each link in `LINKS`."""
    inputs = write_corpus(root / "corpus", size)
    with TwoHosts() as hosts, broker_in(hosts.a, root / "broker") as server:
        return _over_each_link(hosts, server, root, inputs, reduces)


def _over_each_link(
    hosts: TwoHosts, server: MosquittoServer, root: Path, inputs: list[Path], reduces: int
) -> list[Figures]:
    rows: list[Figures] = []
    cluster = Cluster(root / "nodes", server, cluster="lan")
    try:
        cluster.start("a", "--slots", "2", host=hosts.a)
        cluster.start("b", "--slots", "2", host=hosts.b)
        cluster.wait_ready(alive=2, timeout=60, host=hosts.a)
        _run(cluster, hosts, inputs, root / "warm", reduces)  # workers started, caches warm
        for label, rate, delay in LINKS:
            applied = hosts.shape(rate, delay).delay_applied if rate is not None else True
            before = _link_bytes(hosts.b)
            seconds = _run(cluster, hosts, inputs, root / f"out-{len(rows)}", reduces)
            rows.append(Figures(label, rate, applied, seconds, _link_bytes(hosts.b) - before))
            say(f"  {label}: {seconds:.2f}s")
    finally:
        cluster.stop_all()
    return rows


def main() -> None:
    """Print the figures for each link."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", default="64M", help="corpus size (default 64M)")
    parser.add_argument("--reduces", type=int, default=4)
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        sys.exit(f"netshuffle: cannot make a second host here: {reason}")
    size = parse_size(args.size)
    with scratch_dir("netshuffle") as root:
        rows = measure(size, args.reduces, root)
    base = rows[0].seconds
    print(f"\nword count of {size_label(size)} across two hosts (2 nodes x 2 slots)")
    print(f"{'link':<20}{'time':>8}{'link MB':>9}{'MB/s':>8}{'of limit':>10}{'lost':>8}  delay")
    for r in rows:
        mbs = r.link_bytes / r.seconds / 1e6
        share = f"{mbs * 8 / r.rate_mbit:.0%}" if r.rate_mbit else "-"
        lost = f"{r.seconds - base:+.2f}s" if r is not rows[0] else "-"
        delay = "not applied (no sch_netem in this kernel)" if not r.delay_applied else "applied"
        delay = delay if r.rate_mbit else "-"
        carried = r.link_bytes / 1e6
        print(f"{r.link:<20}{r.seconds:>7.2f}s{carried:>9.1f}{mbs:>8.1f}{share:>10}{lost:>8}  {delay}")


if __name__ == "__main__":
    main()
