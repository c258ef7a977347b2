"""An in-memory MQTT broker with the semantics swarm relies on, on a virtual clock.

Kept: topic wildcards (`+`, `#`), retained messages (an empty retained publish deletes, and every SUBSCRIBE
sends the matching retained records, as mosquitto does), the last will of a client that disconnects
uncleanly, persistent sessions (QoS 1, `clean_session = false`: while a client is offline its messages
queue in its session and are delivered, in order, when it reconnects), and per-subscriber delivery in the
order the broker received messages.

Theory of operation
-------------------
Each session owns one FIFO, `pending`, holding both the messages in flight to the client and those queued
while it is offline. Routing appends to it and, if the client is online, schedules one *pump* at the
arrival time; a pump delivers whatever is at the front. Because pumps for one session are scheduled at
non-decreasing times and each takes the front, order is kept even when a message is held back (a slow or
retransmitted packet delays everything behind it, as on TCP). Going offline bumps the session's
generation, which voids the scheduled pumps; what they would have delivered stays in `pending` and is
re-pumped on reconnect. So nothing is lost and nothing overtakes unless a fault says so.

Routing is indexed so that a cluster of a thousand clients stays cheap: exact filters are looked up by
topic, the few distinct wildcard filters are matched once each, and retained records are indexed by their
first level and depth for the SUBSCRIBE that asks for them. Receivers are ordered by session creation, so
routing is deterministic.

Faults come in through `LinkFaults`, asked once per publish and per delivery (see `swarm.sim.network`).
The faults that deliberately break the guarantees above (a lost delivery, a reordered one, a discarded
session) are reported through `on_loss`, so the invariant checker knows when assumption A of
`docs/election.md` no longer holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Protocol

from swarm.messages import Envelope

__all__ = ["Fate", "LinkFaults", "SimBroker", "topic_matches"]

#: A message as delivered: topic and envelope, or None for an empty (clearing) retained publish.
Deliver = Callable[[str, Envelope | None], None]
Schedule = Callable[[float, Callable[[], None]], None]
#: (client id, topic, why): a message the client will never see although QoS 1 promised it.
OnLoss = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class Fate:
    """What a fault does to one message on one path: extra in-order delay, or loss, duplication, reorder."""

    delay: float = 0.0
    drop: bool = False
    duplicate: bool = False
    reorder: float | None = None


CLEAN = Fate()


class LinkFaults(Protocol):
    """The world's fault state, as the broker asks it."""

    def inbound(self, client_id: str) -> Fate:
        """Fate of a publish on its way from `client_id` to the broker."""

    def outbound(self, client_id: str) -> Fate:
        """Fate of a delivery on its way from the broker to `client_id`."""


class _NoFaults:
    def inbound(self, client_id: str) -> Fate:
        return CLEAN

    def outbound(self, client_id: str) -> Fate:
        return CLEAN


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching with `+` (one level) and `#` (the rest)."""
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for i, part in enumerate(p_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(p_parts) == len(t_parts)


def _is_wildcard(pattern: str) -> bool:
    return "+" in pattern or "#" in pattern


def _shape(topic: str) -> tuple[str, int]:
    """(first level, depth): what a filter without `#` and a literal first level can only match."""
    levels = topic.split("/")
    return levels[0], len(levels)


@dataclass(eq=False, slots=True)
class _Session:
    order: int
    client_id: str
    deliver: Deliver
    latency: Callable[[], float]
    will: tuple[str, Envelope] | None
    online: bool = True
    gen: int = 0
    patterns: set[str] = field(default_factory=set)
    pending: deque[tuple[str, Envelope | None]] = field(default_factory=deque)
    inbound_at: float = 0.0
    outbound_at: float = 0.0


class SimBroker:
    """One broker; `now` and `schedule` come from the world's virtual clock."""

    def __init__(
        self,
        clock: Callable[[], float],
        schedule: Schedule,
        faults: LinkFaults | None = None,
        on_loss: OnLoss | None = None,
        max_queued: int | None = None,
    ) -> None:
        self._clock = clock
        self._schedule = schedule
        self.faults: LinkFaults = faults or _NoFaults()
        self._on_loss = on_loss or (lambda _c, _t, _w: None)
        self.max_queued = max_queued
        self._sessions: dict[str, _Session] = {}
        self._order = count()
        self.retained: dict[str, Envelope] = {}
        self._retained_by_shape: dict[tuple[str, int], set[str]] = {}
        self._exact: dict[str, set[_Session]] = {}
        self._wild: dict[str, set[_Session]] = {}
        self._routes: dict[str, list[_Session]] = {}

    # --- connections --------------------------------------------------------------------------------

    def connect(
        self,
        client_id: str,
        deliver: Deliver,
        latency: Callable[[], float],
        will: tuple[str, Envelope] | None,
        clean: bool = True,
    ) -> bool:
        """A client (re)connects; returns whether a previous session was resumed (MQTT's session present).

        A resumed session keeps its subscriptions, and what queued while the client was away is delivered
        first, in order. A clean connect discards any previous session and what it had queued.
        """
        old = self._sessions.get(client_id)
        if old is not None and old.online:
            self._go_offline(old, fire_will=False)
        if old is not None and not clean:
            old.deliver, old.latency, old.will, old.online = deliver, latency, will, True
            for _ in range(len(old.pending)):
                self._pump_later(old, 0.0)
            return True
        if old is not None:
            self._discard(client_id, old, "clean session discarded the queue")
            self._unindex(old)
        self._sessions[client_id] = _Session(next(self._order), client_id, deliver, latency, will)
        return False

    def disconnect(self, client_id: str, clean: bool) -> None:
        """A client goes away. Clean: the session ends and no will fires. Unclean (a crash, a lost link):
        the will fires and the session stays, queueing, for the client's return."""
        session = self._sessions.get(client_id)
        if session is None or not session.online:
            return
        if clean:
            self._go_offline(session, fire_will=False)
            del self._sessions[client_id]
            self._unindex(session)
        else:
            self._go_offline(session, fire_will=True)

    def expire(self, client_id: str) -> None:
        """Drop an offline client's session (mosquitto's `persistent_client_expiration`)."""
        session = self._sessions.get(client_id)
        if session is not None and not session.online:
            self._discard(client_id, session, "session expired")
            del self._sessions[client_id]
            self._unindex(session)

    def restart(self, keep_retained: bool, keep_sessions: bool = False) -> list[str]:
        """The broker process restarts: every connection is lost; sessions (with what is queued and in
        flight) and retained records survive only if kept (persistence). Returns the ids of the clients
        that were connected."""
        ids = [cid for cid, s in self._sessions.items() if s.online]
        for cid, session in self._sessions.items():
            session.gen += 1
            session.online = False
            if not keep_sessions:
                self._discard(cid, session, "broker restarted")
        if not keep_sessions:
            self._sessions.clear()
            self._exact.clear()
            self._wild.clear()
            self._routes.clear()
        if not keep_retained:
            self.retained.clear()
            self._retained_by_shape.clear()
        return ids

    # --- pub/sub ------------------------------------------------------------------------------------

    def subscribe(self, client_id: str, pattern: str) -> None:
        """Subscribe; matching retained messages are delivered (again), as MQTT does on every SUBSCRIBE."""
        session = self._sessions.get(client_id)
        if session is None or not session.online:
            return
        if pattern not in session.patterns:
            session.patterns.add(pattern)
            index = self._wild if _is_wildcard(pattern) else self._exact
            index.setdefault(pattern, set()).add(session)
            self._routes.clear()
        for topic in self._retained_matching(pattern):
            self._deliver_to(session, topic, self.retained[topic])

    def unsubscribe(self, client_id: str, pattern: str) -> None:
        """Stop delivering `pattern` to the client."""
        session = self._sessions.get(client_id)
        if session is not None and session.online and pattern in session.patterns:
            session.patterns.discard(pattern)
            self._drop_from_index(session, pattern)

    def publish(self, client_id: str, topic: str, env: Envelope | None, retain: bool) -> bool:
        """A client publishes; the message reaches the broker after the client's link latency.

        Returns False when the publish is lost on the way (no connection, or a fault): it is then as if
        never sent, for every subscriber alike, which keeps the broker's single order intact.
        """
        session = self._sessions.get(client_id)
        if session is None or not session.online:
            return False
        fate = self.faults.inbound(client_id)
        if fate.drop:
            return False
        at = max(self._clock() + session.latency() + fate.delay, session.inbound_at)
        session.inbound_at = at
        self._schedule(at, lambda: self._route(topic, env, retain))
        return True

    # --- internals ----------------------------------------------------------------------------------

    def _route(self, topic: str, env: Envelope | None, retain: bool) -> None:
        if retain:
            if env is None:
                if self.retained.pop(topic, None) is not None:
                    self._retained_by_shape[_shape(topic)].discard(topic)
            else:
                if topic not in self.retained:
                    self._retained_by_shape.setdefault(_shape(topic), set()).add(topic)
                self.retained[topic] = env
        receivers = self._routes.get(topic)
        if receivers is None:
            found = set(self._exact.get(topic, ()))
            for pattern, sessions in self._wild.items():
                if topic_matches(pattern, topic):
                    found |= sessions
            receivers = sorted(found, key=lambda s: s.order)
            if len(self._routes) > 4096:
                self._routes.clear()  # topics of one-off records (commit batches) would pile up
            self._routes[topic] = receivers
        for session in receivers:
            self._deliver_to(session, topic, env)

    def _retained_matching(self, pattern: str) -> Iterable[str]:
        """Retained topics a new subscription to `pattern` gets, in topic order."""
        if not _is_wildcard(pattern):
            return [pattern] if pattern in self.retained else []
        first, depth = _shape(pattern)
        if "#" in pattern or first == "+":
            candidates: Iterable[str] = self.retained
        else:
            candidates = self._retained_by_shape.get((first, depth), ())
        return sorted(t for t in candidates if topic_matches(pattern, t))

    def _unindex(self, session: _Session) -> None:
        for pattern in session.patterns:
            self._drop_from_index(session, pattern)

    def _drop_from_index(self, session: _Session, pattern: str) -> None:
        index = self._wild if _is_wildcard(pattern) else self._exact
        sessions = index.get(pattern)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del index[pattern]
        self._routes.clear()

    def _deliver_to(self, session: _Session, topic: str, env: Envelope | None) -> None:
        cid = session.client_id
        if not session.online:
            if self.max_queued is not None and len(session.pending) >= self.max_queued:
                self._on_loss(cid, topic, "session queue full")
                return
            session.pending.append((topic, env))
            return
        fate = self.faults.outbound(cid)
        if fate.drop:
            self._on_loss(cid, topic, "delivery dropped")
            return
        if fate.reorder is not None:
            # Bypasses the FIFO: it may overtake, or be overtaken by, messages routed around it.
            deliver, gen = session.deliver, session.gen
            at = self._clock() + session.latency() + fate.reorder
            self._schedule(at, lambda: self._direct(session, gen, deliver, topic, env))
            self._on_loss(cid, topic, "delivery reordered")
            return
        session.pending.append((topic, env))
        if fate.duplicate:
            session.pending.append((topic, env))
            self._pump_later(session, fate.delay)
        self._pump_later(session, fate.delay)

    def _pump_later(self, session: _Session, extra: float) -> None:
        at = max(self._clock() + session.latency() + extra, session.outbound_at)
        session.outbound_at = at
        gen = session.gen
        self._schedule(at, lambda: self._pump(session, gen))

    def _pump(self, session: _Session, gen: int) -> None:
        if session.gen != gen or not session.online or not session.pending:
            return
        topic, env = session.pending.popleft()
        session.deliver(topic, env)

    @staticmethod
    def _direct(session: _Session, gen: int, deliver: Deliver, topic: str, env: Envelope | None) -> None:
        if session.gen == gen and session.online:
            deliver(topic, env)

    def _go_offline(self, session: _Session, fire_will: bool) -> None:
        session.online = False
        session.gen += 1
        if fire_will and session.will is not None:
            self._route(*session.will, retain=True)

    def _discard(self, client_id: str, session: _Session, why: str) -> None:
        for topic, _ in session.pending:
            self._on_loss(client_id, topic, why)
        session.pending.clear()
