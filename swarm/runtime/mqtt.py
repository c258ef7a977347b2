"""A thin typed MQTT transport over aiomqtt, with the broker lessons of DESIGN.md built in.

* TCP_NODELAY on the socket: without it a request/response round trip waits on Nagle's algorithm.
* Persistent sessions (clean_session=False) with QoS 1: while a node is briefly disconnected the broker
  queues what it misses, in order; the election and the replica rely on that.
* Publishing does not wait for the PUBACK: paho queues in call order, so order is kept while the caller
  goes on; a publish that fails is logged, and the protocol's resends (worker reports, client retries)
  cover it. SUBSCRIBE and PUBLISH of one client are handled by the broker in the order sent, so a
  subscription made before a publish is in force when the publish is routed.
* Subscribing does not wait either (`subscribe_nowait`): for the reason above the order is kept without
  the SUBACK, and waiting for it put a 10 s timeout on a busy loop. Under overload that timeout fired
  ("Operation timed out"), tore the connection down, and the resubscription brought every retained
  record again: a reconnect storm that fed itself (issue 16, `docs/election.md`). A refused
  subscription is logged when its SUBACK arrives.
* Keepalive 30 s and a 30 s timeout for what still waits (connecting, the last words): paho answers
  keepalives from the node's event loop, and heartbeats count as traffic, so the broker drops a node
  only after its loop has sent nothing for 45 s; failure detection itself rests on heartbeats and the
  will, not on the keepalive.

* A watchdog serves the socket when the event loop does not: aiomqtt registers paho's reader and writer
  with the loop once, and under uvloop a poll handle closed by an error on the socket (the broker went
  away mid-write) ends both registrations without a word. The node then never read the EOF and kept
  publishing into a queue nobody wrote, until the keepalive ran out a minute later. Every second the
  watchdog looks at the socket; bytes left waiting in either direction across two looks are ones the
  loop's callbacks did not serve, so it reads or writes them itself (and a lost connection surfaces).

* The writer is removed in the order it was added. aiomqtt adds paho's writer to the loop later, through
  `call_soon_threadsafe` (paho may ask from the thread it connects on), but removed it at once: when
  paho asked for the writer and then, its queue written by the writer still in place, for its removal,
  the removal came first and the addition after it. The writer then stayed while paho believed it gone,
  found nothing to write on every turn of the loop, and an idle node spun at half a core; every
  publish of a heartbeat could start it again. Removals now go through the same queue as additions.

* Login: a `BrokerLogin` gives the username and password (else those of the URL, if any) and the
  cluster CA. With a CA the connection is TLS, the chain checked against that CA alone and the host
  name not at all (the broker is dialled by whatever address mDNS gave; the CA identifies it). An
  `mqtts://` URL without a CA uses the system's trusted CAs and checks the host name, as for any
  public TLS server.

Topics given to and yielded by the transport are relative to the cluster prefix `swarm/<cluster>/`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from swarm.config import NodeConfig, parse_broker_url
from swarm.errors import ConfigError
from swarm.runtime.logthrottle import ThrottledWarning
from swarm.trust.tls import client_context

__all__ = ["KEEPALIVE_S", "BrokerLogin", "Transport", "TransportError"]

log = logging.getLogger(__name__)

TransportError = aiomqtt.MqttError

#: MQTT keepalive, and the timeout of the few operations that wait for the broker (seconds).
KEEPALIVE_S = 30

#: How often the watchdog looks for bytes the event loop left waiting on the broker socket (seconds).
SOCKET_WATCH_S = 1.0


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
    """One MQTT connection; an async context manager whose `messages()` yields (topic, payload)."""

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
            ConfigError: for a URL that is not a broker URL.
            ssl.SSLError: when `login.ca_pem` holds no usable certificate.
        """
        address = parse_broker_url(url)
        username, password = address.username, address.password
        if login is not None and login.username is not None:
            username, password = login.username, login.password
        self.prefix = f"swarm/{cluster}/"
        mqtt_will = None
        if will is not None:
            mqtt_will = aiomqtt.Will(self.prefix + will[0], will[1], qos=1, retain=True)
        self._client = aiomqtt.Client(
            address.host,
            address.port,
            identifier=client_id,
            username=username,
            password=password,
            tls_context=_tls_context(login, address.tls),
            clean_session=not persistent,
            will=mqtt_will,
            keepalive=keepalive,
            timeout=float(max(keepalive, 10)),
            max_queued_outgoing_messages=0,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        paho = self._client._client
        paho.on_socket_unregister_write = functools.partial(_remove_writer_in_turn, self._client._loop)
        self._watchdog: asyncio.Task[None]
        self._failed_publishes = ThrottledWarning(log, time.monotonic)

    async def __aenter__(self) -> Self:
        """Connect; raises `TransportError` when the broker refuses or cannot be reached."""
        await self._client.__aenter__()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_socket(), name="mqtt.watchdog")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Disconnect."""
        self._watchdog.cancel()
        await self._client.__aexit__(exc_type, exc, tb)

    async def _watch_socket(self) -> None:
        """Read and write for the loop's socket callbacks when they stopped (see the module docstring).

        Bytes waiting at two looks a second apart were not served in between: the loop polls its sockets
        on every turn, and this task got a turn. Serving them here is harmless when the callbacks are
        merely slow: paho reads and writes whatever is there, from this same thread.
        """
        paho = self._client._client
        unread = unwritten = False
        while True:
            await asyncio.sleep(SOCKET_WATCH_S)
            sock = paho.socket()
            if sock is None:
                unread = unwritten = False
                continue
            readable, writable = _ready(sock.fileno(), write=paho.want_write())
            try:
                if readable and unread:
                    paho.loop_read()
                if writable and unwritten:
                    paho.loop_write()
            except Exception as exc:  # paho raises what the socket raised: the connection is gone
                if not self._client._disconnected.done():
                    self._client._disconnected.set_exception(exc)
                return
            unread, unwritten = readable, writable

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, lossy: bool = False) -> None:
        """Queue a QoS 1 publish (QoS 0 when `lossy`) in call order; do not wait for the broker's
        acknowledgement.

        This calls paho's non-blocking publish underneath aiomqtt: aiomqtt's own `publish` awaits the
        PUBACK, which costs a task and a future per message and was a tenth of a busy node's CPU.
        """
        qos = 0 if lossy else 1
        info = self._client._client.publish(self.prefix + topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._failed_publishes.warning(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    async def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish and wait until the broker has it (for the last words before leaving)."""
        await self._client.publish(self.prefix + topic, payload, qos=1, retain=retain)

    async def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 in one request; returns once the broker confirmed."""
        await self._client.subscribe([(self.prefix + topic, 1) for topic in topics])

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving `topic`."""
        await self._client.unsubscribe(self.prefix + topic)

    def subscribe_nowait(self, *topics: str) -> None:
        """Subscribe at QoS 1 without waiting for the SUBACK; in force for everything published after.

        Raises:
            TransportError: when the connection is gone.
        """
        client = self._client._client
        rc, mid = client.subscribe([(self.prefix + topic, 1) for topic in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise TransportError(f"subscribe {', '.join(topics)}: {mqtt.error_string(rc)}")
        # aiomqtt matches every SUBACK to a waiter; give it one that only checks the answer.
        acked: asyncio.Future[tuple[int, ...] | list[ReasonCode]] = asyncio.get_running_loop().create_future()
        acked.add_done_callback(functools.partial(_check_suback, topics))
        self._client._pending_subscribes[mid] = acked

    def unsubscribe_nowait(self, topic: str) -> None:
        """Stop receiving `topic` without waiting for the UNSUBACK.

        Raises:
            TransportError: when the connection is gone.
        """
        rc, mid = self._client._client.unsubscribe(self.prefix + topic)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise TransportError(f"unsubscribe {topic}: {mqtt.error_string(rc)}")
        self._client._pending_unsubscribes[mid] = asyncio.Event()

    async def messages(self) -> AsyncIterator[tuple[str, bytes, bool]]:
        """Every message received, as (relative topic, payload, retained); ends with `TransportError` on
        loss. `retained` is true for a retained record sent because of a subscription (the broker's stored
        state, possibly old), false for a message delivered as it was published."""
        cut = len(self.prefix)
        async for message in self._client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            yield message.topic.value[cut:], data, bool(message.retain)


def _remove_writer_in_turn(
    loop: asyncio.AbstractEventLoop, client: mqtt.Client, userdata: object, sock: mqtt.SocketLike
) -> None:
    """paho no longer needs its writer: remove it after whatever addition aiomqtt queued before."""
    loop.call_soon_threadsafe(loop.remove_writer, sock.fileno())


def _ready(fd: int, *, write: bool) -> tuple[bool, bool]:
    """Whether socket `fd` has bytes to read, and (when `write`) room to write, without waiting."""
    if hasattr(select, "poll"):  # select() fails on descriptors past FD_SETSIZE; poll() has no such limit
        poller = select.poll()
        poller.register(fd, select.POLLIN | (select.POLLOUT if write else 0))
        ready = poller.poll(0)
        events = ready[0][1] if ready else 0
        return bool(events & (select.POLLIN | select.POLLHUP | select.POLLERR)), bool(events & select.POLLOUT)
    readable, writable, _ = select.select([fd], [fd] if write else [], [], 0)
    return bool(readable), bool(writable)


def _check_suback(topics: tuple[str, ...], acked: asyncio.Future[tuple[int, ...] | list[ReasonCode]]) -> None:
    """Log a subscription the broker refused (an ACL, a full session) when its SUBACK arrives."""
    if acked.cancelled() or acked.exception() is not None:
        return
    for topic, code in zip(topics, acked.result(), strict=False):
        if getattr(code, "is_failure", False):
            log.warning("the broker refused the subscription to %s: %s", topic, code)
