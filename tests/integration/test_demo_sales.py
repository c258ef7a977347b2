"""`swarm demo sales` on two real nodes: its aggregates equal a plain computation over the same orders."""

from __future__ import annotations

import io
import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.demo.sales import DemoOptions, run_demo
from swarm.demo.steps.sales_pipeline import aggregate, convert_currency, generate, sale, shard_range
from swarm.trust.authority import Authority
from tests.integration.nodes import Cluster, running, swarm_cmd

pytestmark = pytest.mark.network

ROWS = 20_000
SEED = 7


@pytest.fixture(scope="module")
def pair(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("demo")
    with running(root, mosquitto_module, ["a", "b"]) as cluster:  # type: ignore[arg-type]
        yield cluster


def _api(cluster: Cluster) -> tuple[str, str]:
    token = Authority.load(cluster.cluster, home=cluster.root).admin_credential().to_token()
    url = cluster.status()["api"]
    assert url, "no node serves an API"
    return str(url), token


def test_the_demo_aggregates_equal_a_plain_computation(pair: Cluster, tmp_path: Path) -> None:
    url, token = _api(pair)
    out, err = io.StringIO(), io.StringIO()
    result = run_demo(url, token, DemoOptions(rows=ROWS, seed=SEED, shards=3), tmp_path, out, err)
    assert result.state == "SUCCESS", (out.getvalue(), err.getvalue())

    plain = aggregate(list(generate(SEED, 0, ROWS)))
    assert result.table == plain["partial"]
    assert sum(t["orders"] for t in result.table) == plain["rowsKept"] < ROWS
    assert len(result.table) == 4 * 5  # every region x category cell has orders at this size

    # The JVM step (or its Python twin, without a JDK) converts exactly like the plain conversion.
    tsv = "".join(
        f"{t['region']}\t{t['category']}\t{t['orders']}\t{t['revenueFen']}\n" for t in plain["partial"]
    )
    assert result.converted["converted"] == convert_currency(tsv, result.converted["rate"])["converted"]
    assert result.converted["engine"] == ("jvm" if result.jvm_used else "python")

    # Three extract shards, each on a row range of its own, and the analysis the definition got.
    rows = {(n["nodeId"], n["shard"]): n for n in result.run["nodes"]}
    shards = [rows[("extract-sales", i)] for i in range(3)]
    assert sorted(tuple(n["output"]["rowRange"]) for n in shards) == [
        shard_range(ROWS, i, 3) for i in range(3)
    ]
    # The aggregation is a job of the MapReduce engine: a map per shard, two reduces, then the step.
    assert {k for k in rows if k[0].startswith("aggregate-sales")} == {
        *(("aggregate-sales.map", i) for i in range(3)),
        ("aggregate-sales.reduce", 0),
        ("aggregate-sales.reduce", 1),
        ("aggregate-sales", 0),
    }
    aggregated = rows[("aggregate-sales", 0)]["output"]
    assert aggregated["maps"] == 3 and aggregated["reduces"] == 2 and len(aggregated["partitions"]) == 2
    assert aggregated["keys"] == 4 * 5 + 12  # region x category cells and the months of 2024
    assert "MapReduce" in out.getvalue() and "aggregate-sales.map#2" in err.getvalue()
    flow = result.defined["dataFlowAnalysis"]
    assert flow["criticalPath"][0] == "extract-sales" and flow["criticalPath"][-1] == "load-report"
    text = out.getvalue()
    assert "critical path:" in text
    # The allocate endpoint either refuses (not implemented) or places every step: never silently.
    step4 = text.split("4. resource allocation", 1)[1].splitlines()[1]
    assert step4.startswith("   ALLOCATED"), step4
    # The run named the allocation by the id the node made for it, and took the slots held for it.
    claimed = [n["counters"].get("reservations_claimed", 0) for n in pair.status()["nodes"]]
    assert sum(claimed) >= 1, claimed
    assert "extract-sales#2" in err.getvalue() and "SUCCESS" in err.getvalue()


def test_the_command_runs_against_a_given_api_with_the_python_fallback(pair: Cluster) -> None:
    url, _ = _api(pair)
    done = subprocess.run(
        swarm_cmd("demo", "sales", "--api", url, "--cluster", pair.cluster, "--rows", "5000", "--no-jvm"),
        capture_output=True,
        text=True,
        timeout=60,
        env=pair.env(),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    plain = aggregate(list(generate(2024, 0, 5000)))
    east_home = next(t for t in plain["partial"] if (t["region"], t["category"]) == ("EAST", "HOME"))
    line = next(line for line in done.stdout.splitlines() if line.split()[:2] == ["EAST", "HOME"])
    assert line.split()[2:4] == [str(east_home["orders"]), str(east_home["quantity"])]
    assert "(python step)" in done.stdout and "MapReduce job of 4 maps" in done.stdout


def test_bad_options_are_refused_before_anything_runs() -> None:
    done = subprocess.run(
        swarm_cmd("demo", "sales", "--rows", "0", "--api", "http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "--rows" in done.stderr


def test_the_data_is_deterministic_and_shards_cover_every_order_once() -> None:
    assert sale(SEED, 123) == sale(SEED, 123) and sale(SEED, 123) != sale(SEED + 1, 123)
    ranges = [shard_range(1001, i, 4) for i in range(4)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1001
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    with pytest.raises(ValueError):
        shard_range(10, 4, 4)
