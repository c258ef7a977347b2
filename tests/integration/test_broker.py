"""The embedded broker (mosquitto and the amqtt fallback) and the mosquitto test fixture."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Protocol

import aiomqtt
import pytest

from swarm.runtime import broker as broker_module
from swarm.runtime.broker import BrokerStartError, EmbeddedBroker
from swarm.runtime.brokerconf import find_mosquitto, port_accepts

pytestmark = pytest.mark.network

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


async def _round_trip(host: str, port: int, *, retain: bool = False) -> bytes:
    """Publish one QoS 1 message and return what a subscriber receives."""
    async with aiomqtt.Client(host, port, identifier="swarm-test") as client:
        await client.subscribe("swarm/test/#", qos=1)
        await client.publish("swarm/test/ping", b"hello", qos=1, retain=retain)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("no message received")


@needs_mosquitto
async def test_embedded_mosquitto_round_trip_and_stop(tmp_path: Path) -> None:
    async with EmbeddedBroker(data_dir=tmp_path, prefer="mosquitto") as broker:
        assert broker.kind == "mosquitto"
        assert broker.running
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert await _round_trip("127.0.0.1", broker.port) == b"hello"
        config = (tmp_path / "mosquitto.conf").read_text()
        assert "max_queued_messages 0" in config
        assert "set_tcp_nodelay true" in config
        port = broker.port
    assert not broker.running
    assert not port_accepts("127.0.0.1", port)


@needs_mosquitto
async def test_embedded_mosquitto_keeps_retained_messages_when_persistent(tmp_path: Path) -> None:
    async with EmbeddedBroker(data_dir=tmp_path, prefer="mosquitto", persistence=True) as broker:
        port = broker.port
        await _round_trip("127.0.0.1", port, retain=True)
    async with EmbeddedBroker(port=port, data_dir=tmp_path, prefer="mosquitto", persistence=True):
        async with aiomqtt.Client("127.0.0.1", port) as client, asyncio.timeout(5):
            await client.subscribe("swarm/test/ping", qos=1)
            message = await anext(aiter(client.messages))
        assert message.retain
        assert message.payload == b"hello"


@needs_mosquitto
async def test_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        port = occupier.getsockname()[1]
        with pytest.raises(BrokerStartError, match=f"cannot listen on 127.0.0.1:{port}.*in use"):
            async with EmbeddedBroker(port=port, data_dir=tmp_path):
                pass


@needs_mosquitto
async def test_mosquitto_failure_reports_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "mosquitto_config", lambda *args: "no_such_option true\n")
    message = r"(?s)exited with status.*Unknown configuration variable \"no_such_option\""
    with pytest.raises(BrokerStartError, match=message):
        async with EmbeddedBroker(data_dir=tmp_path, prefer="mosquitto"):
            pass


async def test_amqtt_fallback_round_trip() -> None:
    async with EmbeddedBroker(prefer="amqtt") as broker:
        assert broker.kind == "amqtt"
        assert broker.running
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert await _round_trip("127.0.0.1", broker.port) == b"hello"
        port = broker.port
    assert not port_accepts("127.0.0.1", port)


async def test_auto_falls_back_to_amqtt_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "find_mosquitto", lambda: None)
    async with EmbeddedBroker() as broker:
        assert broker.kind == "amqtt"
    with pytest.raises(BrokerStartError, match="mosquitto is not installed"):
        async with EmbeddedBroker(prefer="mosquitto"):
            pass


class _Server(Protocol):
    """What the conftest broker fixtures yield."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...


async def test_mosquitto_fixture(mosquitto: _Server) -> None:
    assert mosquitto.url == f"mqtt://{mosquitto.host}:{mosquitto.port}"
    assert await _round_trip(mosquitto.host, mosquitto.port) == b"hello"


def test_mosquitto_module_fixture_serves_sync_tests(mosquitto_module: _Server) -> None:
    assert port_accepts(mosquitto_module.host, mosquitto_module.port)
