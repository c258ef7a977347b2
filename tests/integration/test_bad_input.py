"""Bad input gets a clear error, is counted, and the node keeps running and loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from swarm.messages import ErrorReply
from swarm.runtime.mqtt import Transport
from swarm.trust.authority import Authority
from swarm.trust.signing import Signer
from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def one_node(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("bad")
    with running(root, mosquitto_module, ["solo"]) as cluster:
        yield cluster


def _bad_messages(c: Cluster) -> int:
    node = c.status()["nodes"][0]
    return int(node["counters"].get("bad_messages", 0))


async def test_malformed_messages_are_answered_counted_and_survived(one_node: Cluster) -> None:
    """Malformed messages signed by a real user are answered with the reason; unsigned ones (and a
    packet over the broker's limit) are only counted; the node keeps working."""
    node_id = one_node.status()["coordinator"]
    before = _bad_messages(one_node)
    admin = Authority.load(one_node.cluster, home=one_node.root).admin_credential()
    signer = Signer(admin)
    sender = f"{admin.id}.tester"
    envelope = {"v": 1, "c": one_node.cluster, "s": sender, "e": 0, "id": "bad-1", "t": "claim", "b": {}}
    bad = [
        orjson.dumps({**envelope, "t": "no_such_type"}),
        orjson.dumps({**envelope, "v": 42}),
        orjson.dumps({**envelope, "t": "tasks_query", "b": {"limit": "one"}}),
        orjson.dumps({**envelope, "t": "cancel", "b": {"target": "../../etc"}}),
        orjson.dumps({**envelope, "t": "claim", "b": {"epoch": 1}}),  # a user may not claim
    ]
    replies: list[ErrorReply] = []
    verifier = one_node.verifier()
    login = one_node.login()
    async with Transport(str(one_node.broker), one_node.cluster, sender, login=login, persistent=False) as t:
        await t.subscribe(f"node/{sender}/in")

        async def collect() -> None:
            async for topic, payload, retained in t.messages():
                body = verifier.open(topic, payload, retained=retained, now=time.time()).envelope.body
                if isinstance(body, ErrorReply):
                    replies.append(body)

        rx = asyncio.create_task(collect())
        for i, payload in enumerate(bad):
            topic = f"node/{node_id}/in"
            await t.publish_and_wait(
                topic, signer.seal(topic, payload.replace(b"bad-1", b"bad-%d" % i), time.time())
            )
        for payload in (b"\x00\xffnot json", bad[0]):  # unsigned: counted, never answered
            await t.publish_and_wait("coord/in", payload)
        for _ in range(100):
            if len(replies) >= len(bad):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        rx.cancel()
    reasons = " | ".join(r.reason for r in replies)
    assert len(replies) == len(bad), reasons
    assert "unknown message type 'no_such_type'" in reasons
    assert "unsupported protocol version 42" in reasons
    assert "tasks_query.limit: expected int, got str" in reasons
    assert "cancel.target: not a valid id" in reasons
    assert "a user may not send 'claim'" in reasons
    await asyncio.sleep(1.2)  # counters travel with the next heartbeat
    assert _bad_messages(one_node) >= before + len(bad) + 2
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
