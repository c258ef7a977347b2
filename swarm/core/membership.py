"""Who is in the cluster, and whether each member is alive, suspect or dead.

Theory of operation
-------------------
Every node publishes a retained heartbeat every `heartbeat_interval`; its MQTT last will replaces that
record with `NodeGone` the moment the broker loses the connection. Liveness is decided by heartbeats, not by
the will alone: a will only makes a member *suspect* (no new work goes there), and a member becomes *dead*
only when `failure_timeout` passes without a heartbeat. A node that reconnects within the failure timeout
(a Wi-Fi blip) therefore never dies, and nothing of its is re-queued. A member that misses two heartbeats is
suspect too. Dead members are forgotten after `forget_dead_after`.

A slow observer (Lifeguard, the local-health extensions of SWIM in HashiCorp's memberlist): a node whose own
event loop runs late sees every heartbeat late, and would declare healthy members dead. So two things stand
in for the node's own health. First, silence is measured at the time the tick was *due*, `now - lag`:
whatever arrived before then has been handled (the loop handles events in order), so time the node spent
catching up is not counted against anyone. Second, a local health score, `health` (0 to `MAX_HEALTH`), rises
with the lag (one point per heartbeat interval of lag) and decays by one point per second of timely ticks;
the delay of the node's own heartbeats through the broker, when it follows them, counts the same way (a
starved broker makes every message late). The silence a member is allowed before it is suspect or dead is
multiplied by `patience = 1 + health`. A last will is the broker's own, independent view that the connection
is gone; it shrinks the dead timeout back to the plain `failure_timeout` (Lifeguard's dynamic suspicion
timeout, with the broker as the one confirming witness), so a SIGKILLed coordinator is replaced about as
fast on a loaded node as on an idle one.

A large cluster (Nomad's heartbeat pacing): the members together send at most `HEARTBEATS_PER_S`
heartbeats a second, so past `HEARTBEATS_PER_S * heartbeat_interval` nodes each one's interval grows with
the cluster (`paced_interval`, from the signed roster's size). Followers of every heartbeat (the
coordinator and its standbys) then take in a bounded stream however many members there are: on 100 real
nodes sharing two cores, 200 heartbeats a second were more than a freshly elected coordinator could take
in, and the backlog made it declare live members dead. A heartbeat says the interval its sender keeps,
and a member is judged by its own: its suspect and failure timeouts grow in the same proportion. A will
is not slowed down by it, so a crashed coordinator is replaced as fast in a large cluster as in a small one.

Like every sub-machine of the node, its handlers return nothing: the members whose state changed wait
for `take_changes()` (the node tells the election and the scheduler), those dropped from the table for
`take_forgotten()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swarm.core.config import CoreConfig
from swarm.messages import Heartbeat

__all__ = [
    "HEARTBEATS_PER_S",
    "MAX_HEALTH",
    "MAX_PACE",
    "Member",
    "MemberState",
    "Membership",
    "paced_interval",
]

MemberState = Literal["alive", "suspect", "dead"]

#: The local health score's ceiling: timeouts grow at most ninefold (memberlist's default).
MAX_HEALTH = 8.0
#: Points of local health recovered per second of timely ticks.
HEALTH_DECAY_PER_S = 1.0
#: Heartbeats a second all members together send at most (Nomad's `max_heartbeats_per_second`).
HEARTBEATS_PER_S = 50.0
#: How many times the configured heartbeat interval pacing may stretch it (0.5 s to 10 s by default,
#: reached at 500 nodes), and so the most any member's timeouts grow for its pace.
MAX_PACE = 20.0


def paced_interval(config: CoreConfig, nodes: int) -> float:
    """The heartbeat interval of a node in a cluster whose roster admits `nodes` nodes."""
    base = config.heartbeat_interval
    return min(max(base, nodes / HEARTBEATS_PER_S), base * MAX_PACE)


@dataclass(slots=True)
class Member:
    """What is known of one node."""

    node_id: str
    heartbeat: Heartbeat | None
    last_seen: float
    state: MemberState = "alive"
    state_since: float = 0.0
    #: The broker sent this member's last will since its last heartbeat.
    will: bool = False


class Membership:
    """The member table of one node; pure: the time comes in as `now`."""

    def __init__(self, self_id: str, config: CoreConfig) -> None:
        self._self_id = self_id
        self._config = config
        self.members: dict[str, Member] = {}
        self._forgotten: list[str] = []
        self._changes: list[Member] = []
        self.lag = 0.0
        self.health = 0.0
        self._health_at = 0.0

    def on_heartbeat(self, node_id: str, hb: Heartbeat, now: float) -> None:
        """Record a heartbeat; a suspect or dead member that speaks again is alive."""
        member = self.members.get(node_id)
        if member is None:
            member = self.members[node_id] = Member(node_id, hb, now, "alive", now)
            self._changes.append(member)
            return
        member.heartbeat = hb
        member.last_seen = now
        member.will = False
        if member.state != "alive":
            member.state, member.state_since = "alive", now
            self._changes.append(member)

    def on_gone(self, node_id: str, reason: str, now: float) -> None:
        """The last will (or a clean goodbye): suspect at once, dead after the failure timeout.

        A goodbye from a clean leave is final, so the member is dead at once.
        """
        member = self.members.get(node_id)
        if member is None:
            # A retained will of a node we never saw alive: remember it only as dead.
            self.members[node_id] = Member(node_id, None, now, "dead", now)
            return
        member.will = True
        new_state: MemberState = "dead" if reason == "left" else "suspect"
        if member.state == "alive" or (new_state == "dead" and member.state != "dead"):
            member.state, member.state_since = new_state, now
            self._changes.append(member)

    def take_changes(self) -> list[Member]:
        """Members whose state changed since the last call, in order."""
        changes, self._changes = self._changes, []
        return changes

    @property
    def patience(self) -> float:
        """How many times the usual silence this node allows others, given its own health (1 when well)."""
        return 1.0 + self.health

    def note_lag(self, lag: float, now: float) -> None:
        """This node's own loop lag, measured by the shell at a tick: how late the tick was handled."""
        self.lag = max(lag, 0.0)
        self._raise_health(self.lag, now)

    def note_echo(self, delay: float, now: float) -> None:
        """How long one of this node's heartbeats took to come back through the broker. Everything others
        send is that late too, so it counts against the node's health as loop lag does; it does not move
        the point up to which silence is measured, since the node has handled all that reached it."""
        self._raise_health(max(delay, 0.0), now)

    def _raise_health(self, delay: float, now: float) -> None:
        recovered = max(now - self._health_at, 0.0) * HEALTH_DECAY_PER_S
        self._health_at = now
        self.health = min(
            MAX_HEALTH, max(self.health - recovered, delay / self._config.heartbeat_interval, 0.0)
        )

    def tick(self, now: float) -> None:
        """Apply the suspect and failure timeouts; forget long-dead members."""
        cfg = self._config
        # Silence counts up to when this tick was due: what arrived before then has been handled.
        seen_until = now - self.lag
        for node_id, member in list(self.members.items()):
            if node_id == self._self_id:
                continue
            # As patient as this node must be, or as the member said it is itself: a member whose own
            # loop or broker is late sends late, and is not dead for it (its will, if it dies, is not late).
            patience = max(self.patience, _reported_patience(member))
            pace = _reported_pace(member, cfg.heartbeat_interval)
            suspect_after = (2 * cfg.heartbeat_interval * pace + cfg.tick_interval) * patience
            silent = seen_until - member.last_seen
            dead_after = cfg.failure_timeout if member.will else cfg.failure_timeout * pace * patience
            if member.state != "dead" and silent >= dead_after:
                member.state, member.state_since = "dead", now
                self._changes.append(member)
            elif member.state == "alive" and silent >= suspect_after:
                member.state, member.state_since = "suspect", now
                self._changes.append(member)
            elif member.state == "dead" and now - member.state_since >= self._config.forget_dead_after:
                del self.members[node_id]
                self._forgotten.append(node_id)

    def take_forgotten(self) -> list[str]:
        """Members dropped from the table since the last call (dead for `forget_dead_after`)."""
        forgotten, self._forgotten = self._forgotten, []
        return forgotten

    def state_of(self, node_id: str) -> MemberState | None:
        """The member's state, or None for a node never seen."""
        member = self.members.get(node_id)
        return member.state if member else None

    def alive_ids(self) -> list[str]:
        """Ids of the members that may be given work."""
        return [m.node_id for m in self.members.values() if m.state == "alive" and m.heartbeat is not None]

    def keep_only(self, node_id: str | None) -> None:
        """Forget every member but `node_id`: this node stops following the others."""
        self.members = {k: m for k, m in self.members.items() if k == node_id}

    def validate(self) -> None:
        """Invariants: ids match keys; a dead member's state is consistent."""
        for node_id, member in self.members.items():
            assert member.node_id == node_id, f"member key {node_id} holds {member.node_id}"
            assert member.state in ("alive", "suspect", "dead"), member.state


def _reported_patience(member: Member) -> float:
    """The patience a member's last heartbeat reported, within what any node may have (anything else,
    a forged or garbled value included, counts as 1)."""
    reported = member.heartbeat.patience if member.heartbeat is not None else 1.0
    return reported if 1.0 <= reported <= 1.0 + MAX_HEALTH else 1.0


def _reported_pace(member: Member, base: float) -> float:
    """How many times the configured interval the member's last heartbeat said it keeps (within what
    pacing can make; anything else counts as 1)."""
    interval = member.heartbeat.interval if member.heartbeat is not None else 0.0
    pace = interval / base
    return pace if 1.0 <= pace <= MAX_PACE else 1.0
