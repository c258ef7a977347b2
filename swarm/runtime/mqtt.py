"""A typed MQTT 3.1.1 transport on asyncio, with the broker lessons of DESIGN.md built in.

The protocol's bytes are `mqttwire`'s and the socket is a `LoopSocket` (read and written from the event
loop's callbacks, TLS by OpenSSL on the socket itself); this module is the session: it reads packets as
they arrive, acknowledges QoS 1 messages, matches acknowledgements to their waiters and writes what the
node publishes. It replaced aiomqtt over paho (docs/architecture.md says why): a message went through
paho's packet loop, aiomqtt's callback and queue before the node saw it, 0.22 ms on this machine, and
each PUBACK cost the sender 45 µs.

* TCP_NODELAY on the socket: without it a request/response round trip waits on Nagle's algorithm.
* Persistent sessions (clean_session=False) with QoS 1: while a node is briefly disconnected the broker
  queues what it misses, in order; the election and the replica rely on that.
* Publishing does not wait for the PUBACK. Packets are written in call order, all that one turn of the
  event loop produced in one write: order is kept while the caller goes on, and a busy node makes one
  system call (one TLS record) per turn rather than one per message. A publish made while the link is
  down is logged, and the protocol's resends (worker reports, client retries) cover it. SUBSCRIBE and
  PUBLISH of one client are handled by the broker in the order sent, so a subscription made before a
  publish is in force when the publish is routed.
* Subscribing does not wait either (`subscribe_nowait`): for the reason above the order is kept without
  the SUBACK, and waiting for it put a timeout on a busy loop. Under overload that timeout fired, tore
  the connection down, and the resubscription brought every retained record again: a reconnect storm
  that fed itself (issue 16, `docs/election.md`). A refused subscription is logged when its SUBACK
  arrives.
* Keepalive 30 s and a 30 s timeout for what still waits (connecting, the last words): the transport
  pings when it has written nothing for half the keepalive, and heartbeats count as traffic, so the
  broker drops a node only after its loop has sent nothing for 45 s; a broker that leaves a ping
  unanswered for a keepalive is taken as lost. Failure detection itself rests on heartbeats and the
  will, not on the keepalive.
* Login: a `BrokerLogin` gives the username and password (else those of the URL, if any) and the
  cluster CA. With a CA the connection is TLS, the chain checked against that CA alone and the host
  name not at all (the broker is dialled by whatever address mDNS gave; the CA identifies it). An
  `mqtts://` URL without a CA uses the system's trusted CAs and checks the host name, as for any
  public TLS server.

Topics given to and yielded by the transport are relative to the cluster prefix `swarm/<cluster>/`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from swarm.config import NodeConfig, parse_broker_url
from swarm.errors import ConfigError
from swarm.runtime import mqttwire as wire
from swarm.runtime.logthrottle import ThrottledWarning
from swarm.runtime.loopsocket import LoopSocket
from swarm.trust.tls import client_context

__all__ = ["KEEPALIVE_S", "BrokerLogin", "Transport", "TransportError"]

log = logging.getLogger(__name__)

#: MQTT keepalive, and the timeout of the few operations that wait for the broker (seconds).
KEEPALIVE_S = 30

#: How long closing waits for the DISCONNECT to leave (seconds).
CLOSE_WAIT_S = 2.0

#: Packet identifiers of QoS 1 publishes, subscriptions and unsubscriptions (zero is not one).
_PACKET_IDS = 65_535


class TransportError(Exception):
    """The broker could not be reached, refused the connection, or the connection was lost."""


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """How to log in to the broker: username and password (None: those of the URL, or none), and
    the PEM of the CA that signed the broker's certificate (None: TLS only for an mqtts:// URL)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_pem: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: NodeConfig) -> BrokerLogin:
        """The login that `broker_username`, `broker_password` and `broker_ca` of a config describe.

        Raises:
            ConfigError: when the CA file cannot be read.
        """
        ca_pem = None
        if config.broker_ca is not None:
            try:
                ca_pem = config.broker_ca.read_bytes()
            except OSError as exc:
                raise ConfigError(f"broker_ca {config.broker_ca}: {exc.strerror or exc}") from None
        return cls(config.broker_username, config.broker_password, ca_pem)


def _tls_context(login: BrokerLogin | None, url_tls: bool) -> ssl.SSLContext | None:
    if login is not None and login.ca_pem is not None:
        return client_context(login.ca_pem)
    if url_tls:
        return ssl.create_default_context()
    return None


class Transport:
    """One MQTT connection; an async context manager whose `messages()` yields (topic, payload, retained)."""

    def __init__(
        self,
        url: str,
        cluster: str,
        client_id: str,
        *,
        login: BrokerLogin | None = None,
        will: tuple[str, bytes] | None = None,
        persistent: bool = True,
        keepalive: int = KEEPALIVE_S,
    ) -> None:
        """Describe the connection; it opens when the context is entered.

        Raises:
            ConfigError: for a URL that is not a broker URL, or a password without a user name.
            ssl.SSLError: when `login.ca_pem` holds no usable certificate.
        """
        address = parse_broker_url(url)
        username, password = address.username, address.password
        if login is not None and login.username is not None:
            username, password = login.username, login.password
        if password is not None and username is None:
            raise ConfigError("a broker password needs a user name (MQTT 3.1.1 sends none alone)")
        self.prefix = f"swarm/{cluster}/"
        self._host, self._port = address.host, address.port
        self._tls = _tls_context(login, address.tls)
        self._connect = wire.connect(
            client_id,
            clean_session=not persistent,
            keepalive=keepalive,
            username=username,
            password=password,
            will=None if will is None else wire.Will(self.prefix + will[0], will[1]),
        )
        self._keepalive = keepalive
        self._timeout = float(max(keepalive, 10))
        self._link: _Link | None = None
        self._failed_publishes = ThrottledWarning(log, time.monotonic)

    async def __aenter__(self) -> Self:
        """Connect; raises `TransportError` when the broker refuses or cannot be reached."""
        link = _Link(asyncio.get_running_loop(), self._keepalive)
        try:
            async with asyncio.timeout(self._timeout):
                await link.open(self._host, self._port, self._tls)
                link.send(self._connect)
                await link.connected
        except BaseException as exc:  # cancelled too: the socket must not outlive the attempt
            link.abort()
            if isinstance(exc, TimeoutError):
                raise TransportError(f"no answer from the broker within {self._timeout:.0f}s") from None
            if isinstance(exc, OSError):  # refused, unreachable, TLS: what a user fixes is in the message
                raise TransportError(str(exc) or type(exc).__name__) from exc
            raise
        self._link = link
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Disconnect: cleanly (no will) when the link is up, else just close it."""
        if self._link is not None:
            await self._link.close()

    @property
    def _up(self) -> _Link:
        if self._link is None or self._link.lost is not None:
            raise TransportError(self._link.lost if self._link is not None else "not connected")
        return self._link

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, lossy: bool = False) -> None:
        """Queue a QoS 1 publish (QoS 0 when `lossy`) in call order; do not wait for the broker's
        acknowledgement. A publish while the link is down is logged and dropped."""
        try:
            self._up.publish((self.prefix + topic).encode(), payload, qos=0 if lossy else 1, retain=retain)
        except TransportError as exc:
            self._failed_publishes.warning(f"publish to {topic} failed: {exc}")

    async def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish and wait until the broker has it (for the last words before leaving).

        Raises:
            TransportError: when the link is lost first, or the broker does not answer in time.
        """
        link = self._up
        acked = link.publish((self.prefix + topic).encode(), payload, qos=1, retain=retain, wait=True)
        assert acked is not None
        await self._answer(acked, f"publish to {topic}")

    async def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 in one request; returns once the broker answered (a refusal is logged)."""
        await self._answer(self._up.subscribe([self.prefix + t for t in topics]), "subscribe")

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving `topic`; returns once the broker answered."""
        await self._answer(self._up.unsubscribe(self.prefix + topic), f"unsubscribe {topic}")

    def subscribe_nowait(self, *topics: str) -> None:
        """Subscribe at QoS 1 without waiting for the SUBACK; in force for everything published after.

        Raises:
            TransportError: when the connection is gone.
        """
        self._up.subscribe([self.prefix + t for t in topics])

    def unsubscribe_nowait(self, topic: str) -> None:
        """Stop receiving `topic` without waiting for the UNSUBACK.

        Raises:
            TransportError: when the connection is gone.
        """
        self._up.unsubscribe(self.prefix + topic)

    async def messages(self) -> AsyncIterator[tuple[str, bytes, bool]]:
        """Every message received, as (relative topic, payload, retained); ends with `TransportError` on
        loss. `retained` is true for a retained record sent because of a subscription (the broker's stored
        state, possibly old), false for a message delivered as it was published."""
        link = self._up
        cut = len(self.prefix)
        inbox = link.inbox
        while True:
            while inbox:
                message = inbox.popleft()
                yield message.topic[cut:], message.payload, message.retain
            if link.lost is not None:
                raise TransportError(link.lost)
            await link.arrival()

    async def _answer(self, answer: asyncio.Future[bytes], what: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await answer
        except TimeoutError:
            raise TransportError(f"{what}: no answer from the broker within {self._timeout:.0f}s") from None


class _Link:
    """The connection's state: what arrived and is unread, what was sent and is unanswered."""

    def __init__(self, loop: asyncio.AbstractEventLoop, keepalive: int) -> None:
        self._loop = loop
        self._keepalive = keepalive
        self._reader = wire.PacketReader()
        self._socket: LoopSocket | None = None
        self._outgoing: list[bytes] = []
        self._last_write = loop.time()
        self._ping_sent: float | None = None
        self._pinger: asyncio.TimerHandle | None = None
        self._next_id = 0
        # Unanswered packet identifiers, each with the future its answer resolves (None: nobody waits).
        self._unanswered: dict[int, asyncio.Future[bytes] | None] = {}
        self._topics: dict[int, list[str]] = {}  # a pending SUBSCRIBE's filters, to name a refused one
        self._arrival: asyncio.Future[None] | None = None
        self.connected: asyncio.Future[None] = loop.create_future()
        self.inbox: deque[wire.Publish] = deque()
        self.lost: str | None = None

    async def open(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        """Connect the socket (`LoopSocket.open`; raises what it raises)."""
        self._socket = await LoopSocket.open(host, port, tls, self._received, self._fail)

    def _received(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
        except wire.WireError as exc:
            self._drop(f"the broker sent malformed MQTT: {exc}")
            return
        acks = []
        for packet in packets:
            if isinstance(packet, wire.Publish):
                if packet.packet_id is not None:
                    acks.append(wire.puback(packet.packet_id))
                self.inbox.append(packet)
            elif isinstance(packet, wire.Ack):
                self._answered(packet)
            elif isinstance(packet, wire.ConnAck):
                self._accepted(packet)
            else:
                self._ping_sent = None
        if self.inbox and self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        # Acknowledged after the reader is woken: on the loop's next turn it goes first, and the
        # acknowledgements' write (a system call) after it.
        for ack in acks:
            self.send(ack)

    # --- what the transport asks -----------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        """Write `packet` with everything else sent during this turn of the loop."""
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(packet)

    def publish(
        self, topic: bytes, payload: bytes, *, qos: int, retain: bool, wait: bool = False
    ) -> asyncio.Future[bytes] | None:
        """Send a PUBLISH; with `wait`, a future resolved by its PUBACK.

        Raises:
            TransportError: when no packet identifier is free.
        """
        if not qos:
            self.send(wire.publish(topic, payload, qos=0, retain=retain))
            return None
        answer = self._loop.create_future() if wait else None
        packet_id = self._identifier(answer)
        self.send(wire.publish(topic, payload, qos=1, retain=retain, packet_id=packet_id))
        return answer

    def subscribe(self, filters: list[str]) -> asyncio.Future[bytes]:
        """Send a SUBSCRIBE at QoS 1; the future is resolved by its SUBACK's return codes."""
        answer, packet_id = self._request()
        self._topics[packet_id] = filters
        self.send(wire.subscribe(packet_id, filters))
        return answer

    def unsubscribe(self, topic: str) -> asyncio.Future[bytes]:
        """Send an UNSUBSCRIBE; the future is resolved by its UNSUBACK."""
        answer, packet_id = self._request()
        self.send(wire.unsubscribe(packet_id, [topic]))
        return answer

    async def arrival(self) -> None:
        """Wait until a message arrives or the link is lost."""
        self._arrival = self._loop.create_future()
        await self._arrival

    async def close(self) -> None:
        """DISCONNECT (so that the broker does not publish the will) and close the connection."""
        if self._socket is None:
            return
        if self.lost is None:
            self.send(wire.DISCONNECT)
            self._flush()
            await self._socket.drain(CLOSE_WAIT_S)
        self._socket.close("the connection was closed")

    def abort(self) -> None:
        """Drop the connection without a word."""
        self._drop("the connection was dropped")

    # --- inside ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._outgoing and self._socket is not None and self.lost is None:
            self._socket.write(b"".join(self._outgoing))
            self._last_write = self._loop.time()
        self._outgoing.clear()

    def _identifier(self, answer: asyncio.Future[bytes] | None) -> int:
        """A free packet identifier, now reserved for `answer`.

        Raises:
            TransportError: when all are taken: the broker is 65535 answers behind, and the publish is
                refused rather than held (a node that far behind is better told than buffered).
        """
        if len(self._unanswered) >= _PACKET_IDS:
            raise TransportError(f"{_PACKET_IDS} packets unanswered by the broker")
        packet_id = self._next_id
        while True:
            packet_id = packet_id % _PACKET_IDS + 1
            if packet_id not in self._unanswered:
                break
        self._next_id = packet_id
        self._unanswered[packet_id] = answer
        return packet_id

    def _request(self) -> tuple[asyncio.Future[bytes], int]:
        if self.lost is not None:
            raise TransportError(self.lost)
        answer: asyncio.Future[bytes] = self._loop.create_future()
        return answer, self._identifier(answer)

    def _accepted(self, connack: wire.ConnAck) -> None:
        if self.connected.done():
            self._drop("the broker sent a second CONNACK")
        elif connack.code:
            self._drop(wire.connack_reason(connack.code))
        else:
            self.connected.set_result(None)
            self._pinger = self._loop.call_later(self._keepalive / 2, self._ping)

    def _answered(self, ack: wire.Ack) -> None:
        if ack.packet_id not in self._unanswered:
            return  # a duplicate answer, after a resend by the broker: nothing waits for it
        answer = self._unanswered.pop(ack.packet_id)
        filters = self._topics.pop(ack.packet_id, None)
        if ack.kind == wire.Ack.SUBACK and filters is not None:
            for topic, code in zip(filters, ack.codes, strict=False):
                if code == 0x80:
                    log.warning("the broker refused the subscription to %s", topic)
        if answer is not None and not answer.done():
            answer.set_result(ack.codes)

    def _ping(self) -> None:
        now = self._loop.time()
        if self._ping_sent is not None and now - self._ping_sent >= self._keepalive:
            self._drop(f"the broker did not answer a ping within {self._keepalive}s")
            return
        if self._ping_sent is None and now - self._last_write >= self._keepalive / 2:
            self._ping_sent = now
            self.send(wire.PINGREQ)
        self._pinger = self._loop.call_later(self._keepalive / 4, self._ping)

    def _drop(self, reason: str) -> None:
        self._fail(reason)
        if self._socket is not None:
            self._socket.close(reason)

    def _fail(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        if self._pinger is not None:
            self._pinger.cancel()
        error = TransportError(reason)
        if not self.connected.done():
            self.connected.set_exception(error)
            self.connected.exception()  # retrieved: an abort before anyone awaited is not an error
        for answer in self._unanswered.values():
            if answer is not None and not answer.done():
                answer.set_exception(error)
                answer.exception()
        self._unanswered.clear()
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
