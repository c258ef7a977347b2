"""Bad input is refused with a clear reason; good input round-trips."""

from __future__ import annotations

import orjson
import pytest

from swarm.codec import decode, encode, peek_sender
from swarm.devices.profiles import simulated_capabilities
from swarm.errors import ProtocolError
from swarm.messages import Assign, Assignment, Envelope, Heartbeat, SubmitJob, TaskSpec


def _env(body: object) -> Envelope:
    return Envelope(1, "c", "node-1", 3, "m1", body)  # type: ignore[arg-type]


def test_round_trip() -> None:
    caps = simulated_capabilities(
        "box", memory_mb=8192, disk_free_gb=20.0, battery_percent=55.0, charging=True
    )
    for body in (
        Heartbeat("box", caps, 2, 1, 0.25, 1000, 7, "mosquitto"),
        SubmitJob(
            "j1", (TaskSpec("t1", "echo", {"message": "hi"}, after=("t0",)), TaskSpec("t0", "echo", {}))
        ),
        Assign((Assignment("t1", "j1", 2, "echo", {"a": [1, 2]}, 5.0),)),
    ):
        env = _env(body)
        assert decode(encode(env), cluster="c") == env


def _raw(**over: object) -> bytes:
    msg: dict[str, object] = {"v": 1, "c": "c", "s": "x", "e": 0, "id": "m", "t": "claim", "b": {"epoch": 1}}
    msg.update(over)
    return orjson.dumps(msg)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "expected object"),
        (_raw(v=99), "unsupported protocol version 99"),
        (_raw(t="nope"), "unknown message type 'nope'"),
        (_raw(b={}), "missing field 'epoch'"),
        (_raw(b={"epoch": "1"}), "claim.epoch: expected int, got str"),
        (_raw(b={"epoch": 1, "x": 2}), "unknown field"),
        (_raw(c="other"), "for cluster 'other'"),
        (_raw(e=True), "e: expected an epoch in 0..2**53-1, got True"),
        (
            _raw(
                t="submit_job", b={"job_id": "j", "tasks": [{"task_id": "t", "type": "echo", "payload": []}]}
            ),
            "submit_job.tasks[0].payload: expected object",
        ),
        (
            _raw(
                t="heartbeat",
                b={
                    "name": "n",
                    "caps": {
                        "cores": 0,
                        "memory_mb": 1,
                        "disk_free_gb": 1.0,
                        "platform": "linux",
                        "arch": "x",
                        "gpu": False,
                        "battery_percent": None,
                        "charging": None,
                        "termux": False,
                        "role": "w",
                        "hostname": "h",
                    },
                    "slots": 1,
                    "running": 0,
                    "load": 0.0,
                    "free_memory_mb": 1,
                    "seq": 1,
                },
            ),
            "cores",
        ),
    ],
)
def test_bad_input_is_a_protocol_error(data: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=None) as info:
        decode(data, cluster="c")
    assert needle in str(info.value)


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(b" " * 2000, max_bytes=1000)


def test_peek_sender_finds_who_to_tell() -> None:
    assert peek_sender(_raw(t="nope")) == ("x", "m")
    assert peek_sender(b"garbage") is None


def test_shared_requirements_are_built_once_and_checked_by_their_exact_text() -> None:
    """A batch's tasks share one requirements object; `true` where `1` was accepted is still refused."""
    job = SubmitJob("j1", tuple(TaskSpec(f"t{i}", "echo", {"i": i}) for i in range(3)))
    env = decode(encode(Envelope(1, "c", "x", 0, "m", job)))
    tasks = env.body.tasks  # type: ignore[attr-defined]
    assert tasks[0].requirements is tasks[2].requirements and env.body == job
    raw = orjson.loads(encode(Envelope(1, "c", "x", 0, "m", job)))
    raw["b"]["tasks"][0]["requirements"]["min_cores"] = 1
    decode(orjson.dumps(raw))
    raw["b"]["tasks"][0]["requirements"]["min_cores"] = True
    with pytest.raises(ProtocolError, match=r"tasks\[0\]\.requirements\.min_cores: expected int"):
        decode(orjson.dumps(raw))
