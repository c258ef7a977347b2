"""A thin typed MQTT transport over aiomqtt, with the broker lessons of DESIGN.md built in.

* TCP_NODELAY on the socket: without it a request/response round trip waits on Nagle's algorithm.
* Persistent sessions (clean_session=False) with QoS 1: while a node is briefly disconnected the broker
  queues what it misses, in order; the election and the replica rely on that.
* Publishing does not wait for the PUBACK: paho queues in call order, so order is kept while the caller
  goes on; a publish that fails is logged, and the protocol's resends (worker reports, client retries)
  cover it. SUBSCRIBE and PUBLISH of one client are handled by the broker in the order sent, so a
  subscription made before a publish is in force when the publish is routed.

Topics given to and yielded by the transport are relative to the cluster prefix `swarm/<cluster>/`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import aiomqtt
import paho.mqtt.client as mqtt

from swarm.config import parse_broker_url

__all__ = ["Transport", "TransportError"]

log = logging.getLogger(__name__)

TransportError = aiomqtt.MqttError


class Transport:
    """One MQTT connection; an async context manager whose `messages()` yields (topic, payload)."""

    def __init__(
        self,
        url: str,
        cluster: str,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        persistent: bool = True,
        keepalive: int = 10,
    ) -> None:
        host, port = parse_broker_url(url)
        self.prefix = f"swarm/{cluster}/"
        mqtt_will = None
        if will is not None:
            mqtt_will = aiomqtt.Will(self.prefix + will[0], will[1], qos=1, retain=True)
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=client_id,
            clean_session=not persistent,
            will=mqtt_will,
            keepalive=keepalive,
            max_queued_outgoing_messages=0,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a QoS 1 publish in call order; do not wait for the broker's acknowledgement.

        This calls paho's non-blocking publish underneath aiomqtt: aiomqtt's own `publish` awaits the
        PUBACK, which costs a task and a future per message and was a tenth of a busy node's CPU.
        """
        info = self._client._client.publish(self.prefix + topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    async def publish_and_wait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish and wait until the broker has it (for the last words before leaving)."""
        await self._client.publish(self.prefix + topic, payload, qos=1, retain=retain)

    async def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 in one request; returns once the broker confirmed."""
        await self._client.subscribe([(self.prefix + topic, 1) for topic in topics])

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving `topic`."""
        await self._client.unsubscribe(self.prefix + topic)

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        """Every message received, as (relative topic, payload); ends with `TransportError` on loss."""
        cut = len(self.prefix)
        async for message in self._client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            yield message.topic.value[cut:], data
