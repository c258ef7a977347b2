"""What a `SwarmClient` makes of what it hears, before any broker is involved: members' beats and slots,
and the coordinator's standbys, whose pair offers it learns."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from swarm.core.tracker import JobTracker
from swarm.devices.capabilities import Taint
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Body, CoordinatorAnnounce, Envelope, Heartbeat, NodeGone
from swarm.runtime.client import SwarmClient
from swarm.trust.authority import Authority

NOW = 1_000_000.0
CAPS = simulated_capabilities("h", cores=2, memory_mb=1024, disk_free_gb=1.0)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SwarmClient:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    authority = Authority.open_or_found("home", NOW, lambda: None)
    return SwarmClient("mqtt://127.0.0.1:1", authority.admin_credential())


def _env(sender: str, body: Body, epoch: int = 1) -> Envelope:
    return Envelope(1, "home", sender, epoch, f"{sender}-m", body)


def _beat(seq: int) -> Heartbeat:
    return Heartbeat("n", CAPS, 1, 0, 0.0, 512, seq)


def test_a_retained_heartbeat_heard_through_two_subscriptions_is_one_beat(client: SwarmClient) -> None:
    topic = "node/n-1/hb"
    client._on_envelope(topic, _env("n-1", _beat(5)))
    client._on_envelope(topic, _env("n-1", _beat(5)))  # the same record, through a second subscription
    assert client.members["n-1"].state == "suspect"
    client._on_envelope(topic, _env("n-1", _beat(6)))
    assert client.members["n-1"].state == "alive"
    client._on_envelope(topic, _env("n-1", NodeGone("left")))
    assert client.members["n-1"].state == "dead"
    client._on_envelope(topic, _env("n-1", _beat(6)))  # its next life, which happens to be at the same seq
    assert client.members["n-1"].state == "alive"


def test_the_coordinators_standbys_are_known_from_its_own_announcement() -> None:
    tracker = JobTracker()
    tracker.on_envelope(_env("n-2", CoordinatorAnnounce(3, "n-1", ("n-2",)), epoch=3))
    assert tracker.coordinator is None and tracker.standbys == ()  # not its sender's
    tracker.on_envelope(_env("n-1", CoordinatorAnnounce(3, "n-1", ("n-2", "n-3")), epoch=3))
    assert tracker.coordinator == "n-1" and tracker.standbys == ("n-2", "n-3")
    tracker.on_envelope(_env("n-1", CoordinatorAnnounce(2, "n-1", ()), epoch=2))  # an older epoch
    assert tracker.standbys == ("n-2", "n-3")


def test_the_slots_counted_are_those_of_members_alive_and_open_to_any_task(client: SwarmClient) -> None:
    tainted = replace(CAPS, taints=(Taint("dedicated", "gpu"),))
    for node, beat in (
        ("n-1", Heartbeat("a", CAPS, 4, 0, 0.0, 512, 1)),
        ("n-2", Heartbeat("b", CAPS, 2, 0, 0.0, 512, 1)),
        ("n-3", Heartbeat("c", tainted, 8, 0, 0.0, 512, 1)),  # takes only tasks that tolerate it
        ("n-4", Heartbeat("d", CAPS, 16, 0, 0.0, 512, 1)),
    ):
        client._on_envelope(f"node/{node}/hb", _env(node, beat))
    client._on_envelope("node/n-4/hb", _env("n-4", NodeGone("left")))
    client._every_heartbeat = True  # followed already: nothing to wait for
    assert asyncio.run(client.member_slots()) == 6
