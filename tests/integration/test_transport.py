"""The MQTT transport on real sockets: against mosquitto, and against a broker that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from swarm.runtime import mqttwire as wire
from swarm.runtime.broker import EmbeddedBroker
from swarm.runtime.brokerconf import BrokerSecurity, UserEntry, find_mosquitto
from swarm.runtime.mqtt import BrokerLogin, Transport, TransportError
from swarm.trust.tls import make_ca, make_server_cert

pytestmark = pytest.mark.network

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One packet a client sent: its first byte and its body."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return first, await reader.readexactly(length)
        shift += 7


@asynccontextmanager
async def _broker(script: Script) -> AsyncIterator[tuple[int, list[tuple[int, bytes]]]]:
    """A loopback server that reads the CONNECT and then runs `script`; yields its port and what the
    client sent after the script ended (read until the client closed)."""
    after: list[tuple[int, bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _packet(reader)
        await script(reader, writer)
        try:
            while True:
                after.append(await _packet(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], after


def _transport(port: int, **kwargs: Any) -> Transport:
    return Transport(f"mqtt://127.0.0.1:{port}", "test", "c1", persistent=False, **kwargs)


async def _accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x20\x02\x00\x00")


async def test_a_refusing_broker_is_a_transport_error_that_says_why() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x20\x02\x00\x05")

    async with _broker(refuse) as (port, _):
        with pytest.raises(TransportError, match="not authorized"):
            async with _transport(port):
                pass


async def test_a_connection_the_broker_ends_ends_the_messages() -> None:
    async def accept_and_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept(reader, writer)
        writer.write(wire.publish(b"swarm/test/a", b"last", qos=0, retain=False))
        await writer.drain()
        writer.close()

    async with _broker(accept_and_hang_up) as (port, _), _transport(port) as transport:
        received = []
        with pytest.raises(TransportError):
            async with asyncio.timeout(5):
                async for message in transport.messages():
                    received.append(message)
        assert received == [("a", b"last", False)]  # what arrived before the end is delivered
        with pytest.raises(TransportError):
            await transport.subscribe("a")
        transport.publish("a", b"dropped")  # logged, not raised: resends cover it


async def test_malformed_bytes_from_the_broker_drop_the_connection() -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept(reader, writer)
        await asyncio.sleep(0.1)  # after the CONNACK has been read: the connection is up
        writer.write(b"\x50\x02\x00\x01")  # PUBREC: part of QoS 2, which this client never uses

    async with _broker(babble) as (port, _), _transport(port) as transport:
        with pytest.raises(TransportError, match="malformed MQTT: a packet of type 5"):
            async with asyncio.timeout(5):
                await anext(aiter(transport.messages()))


async def test_qos1_messages_are_acknowledged_and_the_client_disconnects_cleanly() -> None:
    async def deliver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept(reader, writer)
        writer.write(wire.publish(b"swarm/test/r", b"kept", qos=1, retain=True, packet_id=300))

    async with _broker(deliver) as (port, after):
        async with _transport(port) as transport, asyncio.timeout(5):
            assert await anext(aiter(transport.messages())) == ("r", b"kept", True)
        async with asyncio.timeout(5):
            while len(after) < 2:  # the server reads on after the client has gone
                await asyncio.sleep(0.01)
        assert after == [(0x40, b"\x01\x2c"), (0xE0, b"")]  # PUBACK 300, then DISCONNECT


async def test_a_refused_subscription_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def refuse_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept(reader, writer)
        first, body = await _packet(reader)
        assert first == 0x82
        writer.write(b"\x90\x04" + body[:2] + b"\x01\x80")

    with caplog.at_level(logging.WARNING, logger="swarm.runtime.mqtt"):
        async with _broker(refuse_one) as (port, _), _transport(port) as transport:
            await transport.subscribe("granted", "refused")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["the broker refused the subscription to swarm/test/refused"]


async def test_an_unanswered_ping_is_a_lost_broker_and_an_answered_one_is_not() -> None:
    pings = 0

    async def answer_pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        await _accept(reader, writer)
        while (await _packet(reader))[0] == 0xC0:
            pings += 1
            writer.write(b"\xd0\x00")

    async with _broker(answer_pings) as (port, _), _transport(port, keepalive=1) as transport:
        waiting = asyncio.ensure_future(anext(aiter(transport.messages())))
        await asyncio.sleep(2.5)
        assert pings >= 2
        assert not waiting.done()  # the link is still up
        waiting.cancel()

    async with _broker(_accept) as (port, _), _transport(port, keepalive=1) as transport:
        with pytest.raises(TransportError, match="did not answer a ping within 1s"):
            async with asyncio.timeout(5):
                await anext(aiter(transport.messages()))


async def test_against_mosquitto_retained_records_are_marked_and_waits_are_answered(mosquitto: Any) -> None:
    login = BrokerLogin(mosquitto.username, mosquitto.password, mosquitto.ca_pem)
    async with Transport(mosquitto.url, "test", "writer", login=login, persistent=False) as writer:
        await writer.publish_and_wait("rec/1", b"stored", retain=True)
        async with Transport(mosquitto.url, "test", "reader", login=login, persistent=False) as reader:
            await reader.subscribe("rec/#", "live")
            messages = aiter(reader.messages())
            async with asyncio.timeout(5):
                assert await anext(messages) == ("rec/1", b"stored", True)
                for n in range(1000):  # many in one turn: one write, the order kept
                    writer.publish("live", n.to_bytes(2, "big"))
                assert [await anext(messages) for _ in range(1000)] == [
                    ("live", n.to_bytes(2, "big"), False) for n in range(1000)
                ]
                await reader.unsubscribe("live")
                writer.publish("live", b"unheard")
                await writer.publish_and_wait("rec/2", b"heard")
                assert await anext(messages) == ("rec/2", b"heard", False)


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
async def test_both_brokers_keep_sessions_and_publish_the_will_of_a_dropped_client(kind: str) -> None:
    if kind == "mosquitto" and find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    ca_pem, ca_key = make_ca("test")
    cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
    password = "correct horse battery staple"
    security = BrokerSecurity(
        "test", {"n-0a1b2c3d": UserEntry(password, "node", "member")}, cert_pem, key_pem, ca_pem
    )
    login = BrokerLogin("n-0a1b2c3d", password, ca_pem)
    async with EmbeddedBroker(prefer=kind, security=security) as broker:
        url = broker.url

        def transport(client_id: str, **kwargs: Any) -> Transport:
            return Transport(url, "test", client_id, login=login, **kwargs)

        async with transport("watcher") as watcher:
            await watcher.subscribe("node/+/hb", "job/queued")
            await watcher.unsubscribe("job/queued")
        async with transport("sender", persistent=False) as sender:
            dropped = transport("dropped", will=("node/dropped/hb", b"gone"), persistent=False)
            await dropped.__aenter__()
            await dropped.__aexit__(None, None, None)  # a clean leave: no will
            cut = transport("cut", will=("node/cut/hb", b"cut off"), persistent=False)
            await cut.__aenter__()
            assert cut._link is not None
            cut._link.abort()  # the connection ends without DISCONNECT: the broker publishes the will
            await sender.publish_and_wait("job/queued", b"while away")  # unsubscribed: not kept for it
            await sender.publish_and_wait("node/marker/hb", b"after")
        async with transport("watcher") as watcher, asyncio.timeout(10):  # the same session again
            messages = aiter(watcher.messages())
            got = [await anext(messages), await anext(messages)]
        # Queued for the session while it was away (the brokers differ on the retained flag of those).
        assert sorted(m[:2] for m in got) == [("node/cut/hb", b"cut off"), ("node/marker/hb", b"after")]
