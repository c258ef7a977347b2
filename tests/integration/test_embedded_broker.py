"""Zero setup: `swarm join` twice with no broker flag forms one cluster over mDNS on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster

pytestmark = pytest.mark.network


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, broker=None, cluster="zero")
    try:
        yield c
    finally:
        c.stop_all()


def test_two_nodes_without_a_broker_flag_form_one_cluster(bare: Cluster) -> None:
    first = bare.start("first")
    status = bare.wait_ready(alive=1, timeout=40)
    bare.start("second")
    status = bare.wait_ready(alive=2, timeout=40)
    names = sorted(n["name"] for n in status["nodes"] if n["state"] == "alive")
    assert names == ["first", "second"]
    assert {n["broker"] for n in status["nodes"] if n["name"] == "first"} <= {"mosquitto", "amqtt"}
    out = bare.cli("submit", "task", "echo", "--payload", '{"message": "hi"}', "--wait")
    assert out.returncode == 0, out.stderr + bare.logs()
    assert json.loads(out.stdout) == {"message": "hi"}
    assert first.proc.poll() is None
