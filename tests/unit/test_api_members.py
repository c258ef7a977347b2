"""The API's member table: alive, suspect and dead as heartbeats and wills say."""

from __future__ import annotations

from swarm.api.members import MemberTable
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Envelope, Heartbeat, NodeGone

CAPS = simulated_capabilities("h", cores=2, memory_mb=1024, disk_free_gb=1.0)


def _env(sender: str, body: Heartbeat | NodeGone) -> Envelope:
    return Envelope(1, "c", sender, 1, f"{sender}-1", body)


def _states(table: MemberTable, now: float) -> dict[str, str]:
    return {m.node_id: m.state for m in table.members(now)}


def test_a_member_is_suspect_after_the_stale_time_or_two_of_its_own_paced_intervals() -> None:
    table = MemberTable(stale_after=3.0)
    table.on_envelope(_env("small", Heartbeat("s", CAPS, 1, 0, 0.0, 512, 1, interval=0.5)), 0.0)
    table.on_envelope(_env("paced", Heartbeat("p", CAPS, 1, 0, 0.0, 512, 1, interval=4.0)), 0.0)
    table.on_envelope(_env("gone", Heartbeat("g", CAPS, 1, 0, 0.0, 512, 1)), 0.0)
    table.on_envelope(_env("gone", NodeGone("connection lost")), 1.0)
    assert _states(table, 2.9) == {"small": "alive", "paced": "alive", "gone": "dead"}
    assert _states(table, 3.1) == {"small": "suspect", "paced": "alive", "gone": "dead"}
    assert _states(table, 8.1) == {"small": "suspect", "paced": "suspect", "gone": "dead"}
