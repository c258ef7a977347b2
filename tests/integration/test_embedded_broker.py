"""Zero setup: `swarm join` twice with no broker flag forms one cluster over mDNS on loopback."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster

pytestmark = pytest.mark.network


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, None, cluster="zero")
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

    # The node that runs the broker leaves: the survivor finds no broker, starts one, and goes on.
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=15) == 0
    deadline = time.monotonic() + 40
    while True:
        out = bare.cli("status", "--json", timeout=30)
        if out.returncode == 0:
            status = json.loads(out.stdout)
            alive = [n["name"] for n in status["nodes"] if n["state"] == "alive"]
            if alive == ["second"] and status["coordinator"]:
                break
        assert time.monotonic() < deadline, out.stdout + out.stderr + bare.logs()
        time.sleep(0.5)
    out = bare.cli("submit", "task", "echo", "--payload", '{"again": true}', "--wait")
    assert out.returncode == 0, out.stderr + bare.logs()
