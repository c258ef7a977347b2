"""The embedded broker (mosquitto and the amqtt fallback) and the mosquitto test fixture."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import pytest

from swarm.runtime import broker as broker_module
from swarm.runtime.broker import BrokerStartError, EmbeddedBroker
from swarm.runtime.brokerconf import MAX_QUEUED_BYTES, BrokerSecurity, UserEntry, find_mosquitto, port_accepts
from swarm.runtime.mqtt import BrokerLogin, Transport, TransportError
from swarm.trust.tls import client_context, make_ca, make_server_cert

pytestmark = pytest.mark.network

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

_USER = "u-0a1b2c3d"
_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def security() -> BrokerSecurity:
    """One cluster's TLS material and a single admin user allowed to write job specs."""
    ca_pem, ca_key = make_ca("test")
    cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
    users = {_USER: UserEntry(_PASSWORD, "user", "admin")}
    return BrokerSecurity("test", users, cert_pem, key_pem, ca_pem)


@dataclass(frozen=True)
class _Login:
    username: str
    password: str
    ca_pem: bytes

    def client(self, port: int, **kwargs: Any) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            port,
            username=self.username,
            password=self.password,
            tls_context=client_context(self.ca_pem),
            **kwargs,
        )


async def _round_trip(port: int, login: _Login | None, *, retain: bool = False) -> bytes:
    """Publish one QoS 1 message and return what a subscriber receives."""
    client = login.client(port, identifier="swarm-test") if login else aiomqtt.Client("127.0.0.1", port)
    async with client:
        await client.subscribe("swarm/test/#", qos=1)
        await client.publish("swarm/test/job/ping/spec", b"hello", qos=1, retain=retain)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("no message received")


def _login(security: BrokerSecurity) -> _Login:
    return _Login(_USER, _PASSWORD, security.ca_pem)


@needs_mosquitto
async def test_embedded_mosquitto_round_trip_and_stop(tmp_path: Path, security: BrokerSecurity) -> None:
    async with EmbeddedBroker(data_dir=tmp_path, prefer="mosquitto", security=security) as broker:
        assert broker.kind == "mosquitto"
        assert broker.running
        assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
        assert await _round_trip(broker.port, _login(security)) == b"hello"
        config = (tmp_path / "mosquitto.conf").read_text()
        for line in (
            "max_queued_messages 0",
            f"max_queued_bytes {MAX_QUEUED_BYTES}",
            "set_tcp_nodelay true",
            "allow_anonymous false",
            "tls_version tlsv1.2",
            "persistent_client_expiration 1h",
        ):
            assert line in config.splitlines()
        assert f"password_file {tmp_path / 'passwd'}" in config
        assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0
        port = broker.port
    assert not broker.running
    assert not port_accepts("127.0.0.1", port)


@needs_mosquitto
async def test_embedded_mosquitto_keeps_retained_messages_when_persistent(
    tmp_path: Path, security: BrokerSecurity
) -> None:
    login = _login(security)
    async with EmbeddedBroker(
        data_dir=tmp_path, prefer="mosquitto", persistence=True, security=security
    ) as broker:
        port = broker.port
        await _round_trip(port, login, retain=True)
    async with (
        EmbeddedBroker(port=port, data_dir=tmp_path, prefer="mosquitto", persistence=True, security=security),
        login.client(port) as client,
        asyncio.timeout(5),
    ):
        await client.subscribe("swarm/test/job/ping/spec", qos=1)
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
            async with EmbeddedBroker(port=port, data_dir=tmp_path, security=None):
                pass


@needs_mosquitto
async def test_mosquitto_failure_reports_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "mosquitto_config", lambda *args, **kwargs: "no_such_option true\n")
    message = r"(?s)exited with status.*Unknown configuration variable \"no_such_option\""
    with pytest.raises(BrokerStartError, match=message):
        async with EmbeddedBroker(data_dir=tmp_path, prefer="mosquitto", security=None):
            pass


async def test_amqtt_fallback_round_trip(security: BrokerSecurity) -> None:
    async with EmbeddedBroker(prefer="amqtt", security=security) as broker:
        assert broker.kind == "amqtt"
        assert broker.running
        assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
        assert await _round_trip(broker.port, _login(security)) == b"hello"
        port = broker.port
    assert not port_accepts("127.0.0.1", port)


async def test_open_broker_only_when_asked_for_by_name() -> None:
    async with EmbeddedBroker(prefer="amqtt", security=None) as broker:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert await _round_trip(broker.port, None) == b"hello"
    with pytest.raises(TypeError, match="security"):
        EmbeddedBroker(prefer="amqtt")  # type: ignore[call-arg]


async def test_auto_falls_back_to_amqtt_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "find_mosquitto", lambda: None)
    async with EmbeddedBroker(security=None) as broker:
        assert broker.kind == "amqtt"
    with pytest.raises(BrokerStartError, match="mosquitto is not installed"):
        async with EmbeddedBroker(prefer="mosquitto", security=None):
            pass


class _Server(Protocol):
    """What the conftest broker fixtures yield."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def ca_pem(self) -> bytes: ...
    @property
    def ca_path(self) -> Path: ...


async def test_mosquitto_fixture(mosquitto: _Server) -> None:
    assert mosquitto.url == f"mqtts://{mosquitto.host}:{mosquitto.port}"
    assert mosquitto.ca_path.read_bytes() == mosquitto.ca_pem
    login = _Login(mosquitto.username, mosquitto.password, mosquitto.ca_pem)
    assert await _round_trip(mosquitto.port, login) == b"hello"
    anonymous = aiomqtt.Client(mosquitto.host, mosquitto.port, tls_context=client_context(mosquitto.ca_pem))
    with pytest.raises(aiomqtt.MqttError):
        async with anonymous:
            pass


def test_mosquitto_module_fixture_serves_sync_tests(mosquitto_module: _Server) -> None:
    assert port_accepts(mosquitto_module.host, mosquitto_module.port)


async def test_transport_logs_in_with_a_login_or_the_url(mosquitto: _Server) -> None:
    full = BrokerLogin(mosquitto.username, mosquitto.password, mosquitto.ca_pem)
    ca_only = BrokerLogin(ca_pem=mosquitto.ca_pem)
    address = f"{mosquitto.host}:{mosquitto.port}"
    with_credentials = f"mqtts://{mosquitto.username}:{mosquitto.password}@{address}"
    # The login's credentials win over the URL's; the CA alone makes the connection TLS.
    for url, login in [(mosquitto.url, full), (with_credentials, ca_only), (f"mqtt://x:y@{address}", full)]:
        async with Transport(url, "test", "swarm-test", login=login, persistent=False) as transport:
            await transport.subscribe("node/swarm-test/in")
            transport.publish("node/swarm-test/in", b"hi")
            async with asyncio.timeout(5):
                received = await anext(aiter(transport.messages()))
            assert received[:2] == ("node/swarm-test/in", b"hi")
    for url, login in [(mosquitto.url, ca_only), (with_credentials, None)]:  # no login; no CA
        with pytest.raises((TransportError, ssl.SSLError)):
            async with Transport(url, "test", "swarm-test", login=login, persistent=False):
                pass
