"""A MapReduce job whose shuffle crosses a real link: two nodes in two network namespaces.

Host a holds the broker, node `a` and the submitter (with the inputs and the outputs); host b holds node
`b`. They reach each other only over a veth pair shaped to 100 Mbit/s, so every split node `b` maps,
every map output the other node's reducer reads, and every output node `b` uploads crosses the link.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MosquittoServer
from tests.integration.mroutput import check_partitioned, read_outputs, split_per_file, word_counts
from tests.integration.netns import TwoHosts, broker_in, unavailable
from tests.integration.nodes import Cluster
from tests.integration.test_mapreduce import _texts

pytestmark = pytest.mark.network


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no second host: {reason}")
    with TwoHosts() as pair:
        yield pair


@pytest.fixture
def server(hosts: TwoHosts, tmp_path: Path) -> Iterator[MosquittoServer]:
    """The broker, on host a."""
    with broker_in(hosts.a, tmp_path / "broker") as broker:
        yield broker


def test_a_shuffle_across_a_shaped_link_counts_every_word(
    hosts: TwoHosts, server: MosquittoServer, tmp_path: Path
) -> None:
    hosts.shape(rate_mbit=100, delay_ms=20)
    cluster = Cluster(tmp_path / "nodes", server, cluster="lan")
    try:
        cluster.start("a", "--slots", "2", host=hosts.a)
        cluster.start("b", "--slots", "2", host=hosts.b)
        cluster.wait_ready(alive=2, timeout=60, host=hosts.a)
        inputs = _texts(tmp_path, files=6, words=6000)
        out = tmp_path / "out"
        done = cluster.cli(
            "submit", "mapreduce", "--app", "wordcount", "--input", *map(str, inputs),
            "--reduces", "4", "--output", str(out), "--wait", *split_per_file(inputs), timeout=240,
            host=hosts.a,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + cluster.logs()
        summary = json.loads(done.stdout)
        assert summary["maps"] == 6 and summary["reduces"] == 4
        merged = check_partitioned(read_outputs(out, 4))
        assert {k: int(v) for k, v in merged.items()} == word_counts(inputs)
        # Maps ran on both hosts, and every reducer reads a partition of every map's output: the
        # shuffle crossed the link (`splits_read_locally` 0: so did the inputs, from the submitter).
        ran = cluster.cli("result", summary["job_id"], "--json", host=hosts.a)
        assert ran.returncode == 0, ran.stderr
        tasks = json.loads(ran.stdout)["tasks"]
        ids = {cluster.nodes[0].node_id, cluster.nodes[1].node_id}
        assert {t["node"] for t in tasks if t["id"].split(".")[-1].startswith("m")} == ids
        assert summary["splits_read_locally"] == 0
    finally:
        cluster.stop_all()
