"""The node machine's own rules, driven by hand: no broker, no clock but the one passed in."""

from __future__ import annotations

import random

from swarm.core.config import CoreConfig
from swarm.core.events import Connected, Effect, MessageReceived, Publish, Tick
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.capabilities import Capabilities
from swarm.messages import Body, Claim, CoordinatorAnnounce, Envelope, Sync

CFG = CoreConfig()


def _deliver(node: NodeMachine, topic: str, sender: str, epoch: int, body: Body, now: float) -> list[Effect]:
    return node.handle(MessageReceived(topic, Envelope(1, "c", sender, epoch, f"m{now}", body)), now)


def _coordinator() -> NodeMachine:
    caps = Capabilities(4, 4096, 32.0, "linux", "x86_64", False, None, None, False, "worker", "a")
    status = DeviceStatus(caps, 0.1, 2048)
    node = NodeMachine("a", "a", CFG, random.Random(0), lambda spec: None, status, 0, 0.0)
    now, claims = 0.0, []
    while not claims:
        now += CFG.tick_interval
        claims = [
            e.body for e in node.handle(Tick(), now) if isinstance(e, Publish) and isinstance(e.body, Claim)
        ]
    _deliver(node, "election", "a", claims[0].epoch, claims[0], now)
    assert node.scheduler is not None
    return node


def _sync_of(effects: list[Effect]) -> Sync:
    (sync,) = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, Sync)]
    return sync


def _restated(effects: list[Effect]) -> set[str]:
    return {e.topic for e in effects if isinstance(e, Publish) and e.topic in ("election", "coord")}


def test_a_reconnected_coordinator_restates_its_claim_only_after_the_retained_records() -> None:
    node = _coordinator()
    epoch = node.election.epoch
    connected = node.handle(Connected(), 10.0)
    assert _restated(connected) == set()
    effects = _deliver(node, "node/a/in", "a", epoch, _sync_of(connected), 10.1)
    assert _restated(effects) == {"election", "coord"}


def test_a_coordinator_deposed_while_away_does_not_put_its_old_claim_back() -> None:
    node = _coordinator()
    epoch = node.election.epoch
    sync = _sync_of(node.handle(Connected(), 10.0))
    # The retained records come first: a successor has claimed and announced the next epoch.
    _deliver(node, "election", "b", epoch + 1, Claim(epoch + 1), 10.05)
    _deliver(node, "coord", "b", epoch + 1, CoordinatorAnnounce(epoch + 1, "b"), 10.06)
    assert node.scheduler is None
    assert _restated(_deliver(node, "node/a/in", "a", epoch, sync, 10.1)) == set()
