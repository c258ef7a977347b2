"""An in-memory MQTT broker with the semantics swarm relies on, on a virtual clock.

Kept: topic wildcards (`+`, `#`), retained messages (an empty retained publish deletes), the last will of a
client that disconnects uncleanly, and per-subscriber delivery in the order the broker received messages
(each message reaches the broker after the sender's link latency and each subscriber after its own, but
never overtakes an earlier one on the same path). QoS 1 is at-least-once here by construction: nothing is
lost unless a fault is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from swarm.messages import Envelope

__all__ = ["SimBroker", "topic_matches"]

#: A message as delivered: topic and envelope, or None for an empty (clearing) retained publish.
Deliver = Callable[[str, Envelope | None], None]
Schedule = Callable[[float, Callable[[], None]], None]


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


@dataclass(slots=True)
class _Client:
    deliver: Deliver
    latency: Callable[[], float]
    will: tuple[str, Envelope] | None
    patterns: set[str] = field(default_factory=set)
    inbound_at: float = 0.0
    outbound_at: float = 0.0


class SimBroker:
    """One broker; `now` and `schedule` come from the world's virtual clock."""

    def __init__(self, clock: Callable[[], float], schedule: Schedule) -> None:
        self._clock = clock
        self._schedule = schedule
        self._clients: dict[str, _Client] = {}
        self.retained: dict[str, Envelope] = {}
        self._routes: dict[str, list[str]] = {}

    def connect(
        self,
        client_id: str,
        deliver: Deliver,
        latency: Callable[[], float],
        will: tuple[str, Envelope] | None,
    ) -> None:
        """A client (re)connects with a fresh session."""
        self._clients[client_id] = _Client(deliver, latency, will)
        self._routes.clear()

    def disconnect(self, client_id: str, clean: bool) -> None:
        """A client goes away; an unclean loss fires its last will."""
        client = self._clients.pop(client_id, None)
        self._routes.clear()
        if client is not None and not clean and client.will is not None:
            topic, env = client.will
            self._route(topic, env, retain=True)

    def subscribe(self, client_id: str, pattern: str) -> None:
        """Subscribe; matching retained messages are delivered first, as MQTT does."""
        client = self._clients.get(client_id)
        if client is None:
            return
        client.patterns.add(pattern)
        self._routes.clear()
        for topic in sorted(self.retained):
            if topic_matches(pattern, topic):
                self._deliver_to(client, topic, self.retained[topic])

    def unsubscribe(self, client_id: str, pattern: str) -> None:
        """Stop delivering `pattern` to the client."""
        client = self._clients.get(client_id)
        if client is not None:
            client.patterns.discard(pattern)
            self._routes.clear()

    def publish(self, client_id: str, topic: str, env: Envelope | None, retain: bool) -> None:
        """A client publishes; the message reaches the broker after the client's link latency."""
        client = self._clients.get(client_id)
        if client is None:
            return
        at = max(self._clock() + client.latency(), client.inbound_at)
        client.inbound_at = at
        self._schedule(at, lambda: self._route(topic, env, retain))

    def _route(self, topic: str, env: Envelope | None, retain: bool) -> None:
        if retain:
            if env is None:
                self.retained.pop(topic, None)
            else:
                self.retained[topic] = env
        receivers = self._routes.get(topic)
        if receivers is None:
            receivers = [
                cid for cid, c in self._clients.items() if any(topic_matches(p, topic) for p in c.patterns)
            ]
            self._routes[topic] = receivers
        for cid in receivers:
            client = self._clients.get(cid)
            if client is not None:
                self._deliver_to(client, topic, env)

    def _deliver_to(self, client: _Client, topic: str, env: Envelope | None) -> None:
        at = max(self._clock() + client.latency(), client.outbound_at)
        client.outbound_at = at
        deliver = client.deliver
        self._schedule(at, lambda: deliver(topic, env))
