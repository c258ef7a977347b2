"""The node machine's own rules, driven by hand: no broker, no clock but the one passed in."""

from __future__ import annotations

import random

from swarm.core.config import CoreConfig
from swarm.core.events import MessageReceived, Publish, Tick
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.capabilities import Capabilities
from swarm.messages import Claim, CoordinatorAnnounce, Envelope

CFG = CoreConfig()


def _coordinator() -> NodeMachine:
    caps = Capabilities(4, 4096, 32.0, "linux", "x86_64", False, None, None, False, "worker", "a")
    node = NodeMachine(
        "a", "a", CFG, random.Random(0), lambda spec: None, DeviceStatus(caps, 0.1, 2048), 0, 0.0
    )
    now, claims = 0.0, []
    while not claims:
        now += CFG.tick_interval
        claims = [
            e.body for e in node.handle(Tick(), now) if isinstance(e, Publish) and isinstance(e.body, Claim)
        ]
    node.handle(MessageReceived("election", Envelope(1, "c", "a", claims[0].epoch, "m1", claims[0])), now)
    assert node.scheduler is not None
    return node


def test_the_acting_coordinator_restates_itself_over_a_stale_retained_announcement() -> None:
    node = _coordinator()
    epoch = node.scheduler.epoch if node.scheduler else 0
    stale = CoordinatorAnnounce(epoch - 1, "old")
    effects = node.handle(MessageReceived("coord", Envelope(1, "c", "old", epoch - 1, "m2", stale)), 10.0)
    restated = {e.topic: e.body for e in effects if isinstance(e, Publish) and e.retain}
    assert restated["election"] == Claim(epoch)
    assert restated["coord"] == CoordinatorAnnounce(epoch, "a", ())
    # Its own announcement coming back is not stale: nothing to restate.
    own = CoordinatorAnnounce(epoch, "a")
    effects = node.handle(MessageReceived("coord", Envelope(1, "c", "a", epoch, "m3", own)), 10.1)
    assert not [e for e in effects if isinstance(e, Publish) and e.topic in ("election", "coord")]
