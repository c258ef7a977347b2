"""The members as the API shows them: every heartbeat, heard only while someone uses the API.

A node's core follows only the coordinator's heartbeat (the coordinator and claimants follow them all),
so that heartbeats cost O(members) per interval, not O(members^2). The API needs every member (devices,
the contract check, allocation), so its host subscribes to all heartbeats on first use and lets go after
`IDLE_S` without use; retained heartbeats fill the table within a broker round trip.

State: alive while the last heartbeat is at most `stale_after` old (or two of the intervals the member
states, in a cluster large enough to pace its heartbeats), suspect after that, dead once the member said
goodbye or its last will arrived.
"""

from __future__ import annotations

from swarm.core.membership import Member
from swarm.messages import Envelope, Heartbeat, NodeGone

__all__ = ["IDLE_S", "MemberTable"]

#: Seconds without an API request or stream client after which the API stops following heartbeats.
IDLE_S = 300.0


class MemberTable:
    """Every member's last heartbeat, and whether it is alive."""

    def __init__(self, stale_after: float) -> None:
        self._stale_after = stale_after
        self._members: dict[str, Member] = {}

    def on_envelope(self, env: Envelope, now: float) -> None:
        """A heartbeat or a goodbye (other messages are ignored)."""
        body = env.body
        if isinstance(body, Heartbeat):
            self._members[env.sender] = Member(env.sender, body, now, "alive", now)
        elif isinstance(body, NodeGone):
            known = self._members.get(env.sender)
            self._members[env.sender] = Member(
                env.sender, known.heartbeat if known else None, now, "dead", now
            )

    def members(self, now: float) -> list[Member]:
        """Every member heard of, with its state as of `now`, by id."""
        out = []
        for node_id in sorted(self._members):
            m = self._members[node_id]
            # A large cluster paces heartbeats (`membership.paced_interval`): two missed ones at least.
            stale_after = max(self._stale_after, 2 * m.heartbeat.interval if m.heartbeat else 0.0)
            if m.state == "alive" and now - m.last_seen > stale_after:
                m = Member(m.node_id, m.heartbeat, m.last_seen, "suspect", m.last_seen + stale_after)
            out.append(m)
        return out
