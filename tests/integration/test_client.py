"""The Python client against real nodes: futures for tasks, map and gather, failures, cancel, status,
MapReduce, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm import AsyncClient, Client, TaskFailed
from swarm.runtime.client import SwarmClient
from swarm.trust.authority import Authority
from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def pair(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("client")
    with running(root, mosquitto_module, ["a", "b"]) as cluster:  # type: ignore[arg-type]
        yield cluster


@pytest.fixture
def as_user(pair: Cluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process set up as a user of the cluster is: the broker's login in the environment."""
    env = pair.env()
    for key in ("SWARM_BROKER_USERNAME", "SWARM_BROKER_PASSWORD", "SWARM_BROKER_CA", "SWARM_HOME"):
        monkeypatch.setenv(key, env[key])
    token = Authority.load(pair.cluster, home=pair.root).admin_credential().to_token()
    return {"cluster": pair.cluster, "broker": str(pair.broker), "token": token}


def test_submit_map_gather_and_failures(as_user: dict[str, str]) -> None:
    with Client(**as_user) as swarm:
        future = swarm.submit("echo", {"message": "hi"}, priority="high", timeout=30)
        assert future.result(timeout=60) == {"message": "hi"}
        squares = swarm.map("python_eval", [{"expression": f"{i} * {i}"} for i in range(10)])
        assert swarm.gather(squares, timeout=60) == [i * i for i in range(10)]
        bad = swarm.submit("python_eval", {"expression": "1 / 0"}, max_retries=0)
        with pytest.raises(TaskFailed) as failed:
            bad.result(timeout=60)
        assert failed.value.state == "failed" and "ZeroDivision" in str(failed.value.error)
        with pytest.raises(TaskFailed, match="rejected"):
            swarm.submit("no-such-type").result(timeout=60)
        slow = swarm.submit("sleep", {"seconds": 30})
        swarm.cancel(slow)
        with pytest.raises(TaskFailed) as cancelled:
            slow.result(timeout=60)
        assert cancelled.value.state == "cancelled"
        status = swarm.status()
        assert status["coordinator"] in status["nodes"] and len(status["nodes"]) == 2


def test_mapreduce_wordcount(as_user: dict[str, str], tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a b a\nc a b\n")
    with Client(**as_user) as swarm:
        job = swarm.mapreduce("wordcount", [text], reduces=2, output=tmp_path / "out")
    assert job["maps"] == 1  # splits sized by the cluster's slots, never below `MIN_AUTO_SPLIT`
    counts = {}
    for path in job["outputs"]:
        for line in Path(path).read_text().splitlines():
            word, n = line.split()
            counts[word] = int(n)
    assert counts == {"a": 3, "b": 2, "c": 1}


def test_the_async_client(as_user: dict[str, str]) -> None:
    async def main() -> list[int]:
        async with AsyncClient(**as_user) as swarm:
            futures = await swarm.map("python_eval", [{"expression": f"{i} + 1"} for i in range(5)])
            return await swarm.gather(futures, timeout=60)

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


async def test_the_members_slots_come_from_their_heartbeats(pair: Cluster) -> None:
    admin = Authority.load(pair.cluster, home=pair.root).admin_credential()
    async with SwarmClient(str(pair.broker), admin, login=pair.login()) as client:
        slots = await client.member_slots()
    assert slots == sum(n["slots"] for n in pair.status()["nodes"]) > 0
