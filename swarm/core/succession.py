"""Following and succession: what a node subscribes to for its part, and how a successor takes over.

Theory of operation
-------------------
Following. Every node subscribes to (relative to `swarm/<cluster>/`) `node/<self>/in`, `election`, `coord`
and `job/+/state`, and to `coord/in` while it acts as coordinator. Every heartbeat (`node/+/hb`) is followed
only by the coordinator and by a node whose turn to claim has come; the job log (the specs `job/+/spec` and
the commits `job/+/commits/+`) also by the standbys the coordinator names, so that one of them takes over
with its replica warm. Only those need a job's spec: it is there to adopt the job, and decoding a large
one on every member cost each of them seconds of CPU on a saturated machine (`docs/election.md`). Everyone
else follows the coordinator's heartbeat alone. So a cluster of N members carries O(N) heartbeat and
commit deliveries instead of O(N^2). A node starts following by subscribing, and the retained records that
brings (every live member's heartbeat, every spec and commit batch) reach it before anything it publishes
afterwards comes back to it: that is why a claim, echoed, finds the claimant's member table
and replica complete (see `election.py`).

Succession. The line to take over is the coordinator, the standbys it names (mains-powered members
first, by id), then every other member alive, by id. The node `election.py`
elects builds its scheduler from what it followed: the quota ledger, every job its replica holds active
(with the commits and spent attempts of its predecessor), and the member table.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from swarm import topics
from swarm.core.election import Election, StateOf
from swarm.core.events import Publish
from swarm.core.membership import Member
from swarm.core.replica import ActiveJob
from swarm.core.scheduler import Scheduler
from swarm.messages import CoordinatorAnnounce, QuotaLedger

__all__ = [
    "NODE_SUBSCRIPTIONS",
    "announcement",
    "choose_standbys",
    "followed",
    "may_claim",
    "succession_rank",
    "take_over",
]

#: Topics every node follows besides its inbox. Every member's heartbeat is followed by the coordinator
#: and claimants only; the job log (specs and commits) by the coordinator, its standbys and claimants.
NODE_SUBSCRIPTIONS = (topics.ELECTION, topics.COORD, topics.JOB_STATES)


def followed(election: Election, node_id: str) -> set[str]:
    """The topics node `node_id`'s part requires now, besides its inbox and `NODE_SUBSCRIPTIONS`."""
    everything = election.acting_epoch is not None or election.claiming
    wanted: set[str] = set()
    if everything:
        wanted.add(topics.EVERY_HEARTBEAT)
    elif election.coordinator is not None and election.coordinator != node_id:
        wanted.add(topics.heartbeat(election.coordinator))
    if everything or node_id in election.standbys:
        wanted |= {topics.JOB_SPECS, topics.JOB_LOG, topics.QUOTA_LEDGER}
    return wanted


def may_claim(following: Iterable[str]) -> bool:
    """Whether a node following these topics would, once elected, know every member and every job."""
    return {topics.EVERY_HEARTBEAT, topics.JOB_SPECS, topics.JOB_LOG} <= set(following)


def choose_standbys(members: Iterable[Member], self_id: str, count: int) -> tuple[str, ...]:
    """The `count` members that follow everything so one can take over at once: mains-powered first, by
    id."""
    alive = [m for m in members if m.state == "alive" and m.heartbeat is not None and m.node_id != self_id]
    best = heapq.nsmallest(
        count,
        alive,
        key=lambda m: (m.heartbeat is None or m.heartbeat.caps.battery_percent is not None, m.node_id),
    )
    return tuple(m.node_id for m in best)


def succession_rank(election: Election, alive_ids: Iterable[str], node_id: str, state_of: StateOf) -> int:
    """Node `node_id`'s place in line to take over (0 first): the coordinator, its standbys, then the
    members known `alive_ids`, by id; a coordinator or standby known dead (`state_of`) has no place. A
    node that knows no coordinator and no other member is first: a lone node's first start, or the
    survivor of a coordinator that left, must not wait for a successor ahead of it (zero-setup
    `swarm join`, `BrokerLocator`)."""
    named = (election.coordinator, *election.standbys)
    line = [n for n in named if n and (n == node_id or state_of(n) != "dead")]
    if node_id in line:
        return line.index(node_id)
    others = sorted(set(alive_ids) - set(line) | {node_id})
    return len(line) + others.index(node_id)


def announcement(epoch: int, node_id: str, standbys: tuple[str, ...]) -> Publish:
    """The retained record by which `node_id` says it coordinates `epoch`, naming its standbys."""
    return Publish(topics.COORD, CoordinatorAnnounce(epoch, node_id, standbys), epoch=epoch, retain=True)


def take_over(
    scheduler: Scheduler,
    active: Iterable[ActiveJob],
    members: Iterable[Member],
    ledger: QuotaLedger | None,
    now: float,
) -> None:
    """A new coordinator's `scheduler` takes over what its predecessor left: the day's quota admissions,
    the jobs the replica holds `active` (`Replica.active`), and the members."""
    if ledger is not None:
        scheduler.quotas.restore(ledger.admitted)
    for job, committed, spent in active:
        scheduler.adopt(job, committed, now, spent)
    for member in members:
        scheduler.on_member(member, now)
