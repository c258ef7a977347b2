"""Authentication and topic access for the amqtt fallback broker, from the same table as mosquitto's.

amqtt loads plugins by dotted name and builds each one's `Config` dataclass from the broker
configuration, so the plugins here receive `security`: a function returning the broker's current
`BrokerSecurity`. Reading it at every check is what makes a change of users take effect at once.

`GuardedBroker` closes a gap of amqtt 0.12: a CONNECT that names the client id of a live persistent
session is merged into that session (its will, its credentials) and takes the connection over
*before* it is authenticated. A client without credentials could thus disconnect any node whose id
it knows (ids are visible in topics) and have the broker publish a will of its choosing, unchecked
by any topic filter, e.g. a retained message over a job's spec. The guard authenticates the CONNECT
on its own first and refuses it before amqtt's session logic sees it. It also refuses a will on a
topic the principal may not publish: amqtt would publish it unchecked.

This module imports amqtt, which takes a tenth of a second; `broker.py` imports it only when the
fallback runs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from swarm.runtime.brokerconf import AclAction, BrokerSecurity, acl_allows

__all__ = ["GuardedBroker", "SwarmAuthPlugin", "SwarmTopicPlugin"]

SecuritySource = Callable[[], BrokerSecurity]

_ACTIONS: dict[Any, AclAction] = {
    Action.PUBLISH: "publish",
    Action.SUBSCRIBE: "subscribe",
    Action.RECEIVE: "receive",
}


def _password_matches(security: BrokerSecurity, username: str | None, password: Any) -> bool:
    entry = security.users.get(username or "")
    if entry is None or password is None:
        return False
    given = password if isinstance(password, bytes) else str(password).encode()
    return secrets.compare_digest(entry.password.encode(), given)


class SwarmAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Admit a client only with the username and password of a current principal."""

    @dataclass
    class Config:
        """`security` returns the broker's current `BrokerSecurity`."""

        security: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        """True for a current principal's login, False for anything else (no anonymous access)."""
        source: SecuritySource = self.config.security
        return _password_matches(source(), session.username, session.password)


class SwarmTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Apply `brokerconf.ACL_RULES` to every publish, subscription and delivery."""

    @dataclass
    class Config:
        """`security` returns the broker's current `BrokerSecurity`."""

        security: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        """Whether the session's principal may do `action` on `topic`; unknown principals may do nothing.

        Checking deliveries too (`receive`) is what cuts off a principal removed while connected.
        """
        what = _ACTIONS.get(action)
        if session is None or topic is None or what is None or session.username is None:
            return False
        security = self.config.security()
        entry = security.users.get(session.username)
        if entry is None:
            return False
        return acl_allows(security.cluster, session.username, entry, what, topic)


class _ReplayReader(ReaderAdapter):  # type: ignore[misc]
    """Serve bytes already read once more, then read on from the connection."""

    def __init__(self, inner: ReaderAdapter, replay: bytes) -> None:
        self._inner = inner
        self._replay = replay

    async def read(self, n: int = -1) -> bytes:
        if not self._replay:
            data: bytes = await self._inner.read(n)
            return data
        if n < 0:
            rest: bytes = await self._inner.read(n)
            data, self._replay = self._replay + rest, b""
            return data
        head, self._replay = self._replay[:n], self._replay[n:]
        if len(head) < n:
            head += await self._inner.read(n - len(head))
        return head

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _RecordingReader(ReaderAdapter):  # type: ignore[misc]
    """Keep a copy of every byte read (the CONNECT packet, read once to authenticate it)."""

    def __init__(self, inner: ReaderAdapter) -> None:
        self._inner = inner
        self.recorded = bytearray()

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self._inner.read(n)
        self.recorded += data
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class GuardedBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, authenticating each CONNECT before it can touch an existing session."""

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        recorder = _RecordingReader(reader)
        try:
            _, incoming = await BrokerProtocolHandler.init_from_connect(
                recorder, writer, self.plugins_manager
            )
        except (AMQTTError, MQTTError, NoDataError):
            await writer.close()
            raise
        refusal = None
        if not await self._authenticate(incoming, None):
            refusal = "without valid credentials"
        elif incoming.will_flag and not await self._topic_filtering(
            incoming, incoming.will_topic or "", Action.PUBLISH
        ):
            # amqtt publishes a will without any topic check; mosquitto checks it when it fires.
            refusal = f"with a will on {incoming.will_topic!r}, which it may not publish"
        if refusal is not None:
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"refused a client {refusal} from {remote_address}:{remote_port}")
        replay = _ReplayReader(reader, bytes(recorder.recorded))
        result: tuple[BrokerProtocolHandler, Session] = await super()._initialize_client_session(
            replay, writer, remote_address, remote_port
        )
        return result
