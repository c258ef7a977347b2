"""Bad input gets a clear error, is counted, and the node keeps running and loses nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from swarm.codec import decode
from swarm.messages import ErrorReply
from swarm.runtime.mqtt import Transport
from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def one_node(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("bad")
    with running(root, mosquitto_module.url, ["solo"]) as cluster:  # type: ignore[attr-defined]
        yield cluster


def _bad_messages(c: Cluster) -> int:
    node = c.status()["nodes"][0]
    return int(node["counters"].get("bad_messages", 0))


async def test_malformed_messages_are_answered_counted_and_survived(one_node: Cluster) -> None:
    node_id = one_node.status()["coordinator"]
    before = _bad_messages(one_node)
    envelope = {"v": 1, "c": one_node.cluster, "s": "tester", "e": 0, "id": "bad-1", "t": "claim", "b": {}}
    bad = [
        b"\x00\xffnot json",
        orjson.dumps({**envelope, "t": "no_such_type"}),
        orjson.dumps({**envelope, "v": 42}),
        orjson.dumps({**envelope, "t": "claim", "b": {"epoch": "one"}}),
        orjson.dumps({**envelope, "t": "results", "b": {"results": [{"task_id": 1}]}}),
        orjson.dumps({**envelope, "b": {"epoch": 1, "pad": "x" * (17 * 1024 * 1024)}}),
    ]
    replies: list[ErrorReply] = []
    async with Transport(str(one_node.broker), one_node.cluster, "tester", persistent=False) as t:
        await t.subscribe("node/tester/in")

        async def collect() -> None:
            async for _, payload in t.messages():
                body = decode(payload, cluster=one_node.cluster).body
                if isinstance(body, ErrorReply):
                    replies.append(body)

        rx = asyncio.create_task(collect())
        for payload in bad:
            await t.publish_and_wait(f"node/{node_id}/in", payload)
        await t.publish_and_wait("coord/in", bad[1])
        for _ in range(100):
            if len(replies) >= 5:
                break
            await asyncio.sleep(0.05)
        rx.cancel()
    reasons = " | ".join(r.reason for r in replies)
    assert "unknown message type 'no_such_type'" in reasons
    assert "unsupported protocol version 42" in reasons
    assert "claim.epoch: expected int, got str" in reasons
    assert "exceeds the limit" in reasons
    await asyncio.sleep(1.2)  # counters travel with the next heartbeat
    assert _bad_messages(one_node) >= before + len(bad) + 1
    out = one_node.cli("submit", "task", "echo", "--payload", '{"still": "alive"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"still": "alive"}, out.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["submit", "task", "no_such_type", "--wait"], 1, "unknown task type"),
        (["submit", "task", "sleep", "--payload", '{"seconds": "x"}', "--wait"], 1, "seconds"),
        (["submit", "task", "echo", "--payload", "{not json", "--wait"], 2, "--payload is not JSON"),
        (["submit", "task", "echo", "--require", "cores=4", "--wait"], 2, "unknown requirement 'cores'"),
        (["submit", "task", "echo", "--require", "min_cores=-1", "--wait"], 2, "must not be negative"),
    ],
)
def test_invalid_submissions_fail_clearly(one_node: Cluster, args: list[str], code: int, needle: str) -> None:
    out = one_node.cli(*args, timeout=60)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert needle in out.stderr


def test_cyclic_batch_is_refused_before_submission(one_node: Cluster, tmp_path: Path) -> None:
    spec = {
        "kind": "batch",
        "tasks": [
            {"id": "a", "type": "echo", "after": ["b"]},
            {"id": "b", "type": "echo", "after": ["a"]},
        ],
    }
    path = tmp_path / "cycle.yaml"
    path.write_text(json.dumps(spec))
    out = one_node.cli("submit", "batch", str(path), "--wait", timeout=60)
    assert out.returncode == 2 and "cycle" in out.stderr, out.stderr
