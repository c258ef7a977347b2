"""The embedded broker admits only the cluster's principals, over TLS, each within its ACL.

Every test runs against mosquitto and against the amqtt fallback. What they show about each broker
(measured with mosquitto 2.0.11 and amqtt 0.12):

- no credentials, a wrong password, or a plaintext connection to the TLS port: refused;
- the server certificate verifies against the cluster CA and not against another CA, whatever
  address the broker is dialled by;
- after `replace_users` without X, X cannot log in, and X's live connection is closed;
- a node cannot publish anything under `trust/` (it may clear another node's heartbeat: the
  coordinator forgets long-dead members; the signature check keeps it from speaking for them), a user
  cannot publish a heartbeat, a viewer cannot submit. mosquitto 2.0.11
  disconnects a client on such a publish (and acknowledges a QoS 1 one first); amqtt drops the
  message and keeps the connection;
- a client without credentials that names the client id of a live persistent session cannot take
  it over, nor have the broker publish its will;
- a will on a topic its owner may not publish never reaches anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest

from swarm.runtime.broker import EmbeddedBroker, Prefer
from swarm.runtime.brokerconf import BrokerSecurity, UserEntry, find_mosquitto
from swarm.trust.tls import client_context, make_ca, make_server_cert

pytestmark = pytest.mark.network

CLUSTER = "home"
NODE_A, NODE_B, ADMIN, VIEWER = "n-1ad6b476", "n-2be7c587", "u-3f2a9c01", "u-4a3b0d12"
USERS = {
    NODE_A: UserEntry("password-of-a", "node", "member"),
    NODE_B: UserEntry("password-of-b", "node", "member"),
    ADMIN: UserEntry("password-of-admin", "user", "admin"),
    VIEWER: UserEntry("password-of-viewer", "user", "viewer"),
}
QUIET_S = 0.5  # how long a subscriber waits to be sure that nothing arrives


@pytest.fixture(scope="module")
def security() -> BrokerSecurity:
    ca_pem, ca_key = make_ca(CLUSTER)
    cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
    return BrokerSecurity(CLUSTER, USERS, cert_pem, key_pem, ca_pem)


@pytest.fixture(
    params=[
        pytest.param(
            "mosquitto",
            marks=pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
        ),
        "amqtt",
    ]
)
async def broker(request: pytest.FixtureRequest, security: BrokerSecurity) -> AsyncIterator[EmbeddedBroker]:
    prefer: Prefer = request.param
    async with EmbeddedBroker(prefer=prefer, security=security) as running:
        assert running.kind == prefer
        yield running


@dataclass(frozen=True)
class Dial:
    """Connections to one broker."""

    broker: EmbeddedBroker
    tls: ssl.SSLContext | None

    def client(self, user: str | None, password: str | None = None, **kwargs: Any) -> aiomqtt.Client:
        if user is not None and password is None:
            password = USERS[user].password
        kwargs.setdefault("identifier", user or "anonymous")
        return aiomqtt.Client(
            "127.0.0.1",
            self.broker.port,
            username=user,
            password=password,
            tls_context=self.tls,
            timeout=3,
            **kwargs,
        )


@pytest.fixture
def dial(broker: EmbeddedBroker, security: BrokerSecurity) -> Dial:
    return Dial(broker, client_context(security.ca_pem))


async def _refused(client: aiomqtt.Client) -> bool:
    try:
        async with client:
            return False
    except aiomqtt.MqttError:
        return True


async def _collect(client: aiomqtt.Client, seconds: float = QUIET_S) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append((message.topic.value, message.payload))
    return got


def topic(rest: str) -> str:
    return f"swarm/{CLUSTER}/{rest}"


async def test_no_credentials_and_wrong_password_are_refused(dial: Dial) -> None:
    assert await _refused(dial.client(None))
    assert await _refused(dial.client(NODE_A, "not-the-password"))
    assert await _refused(dial.client("n-00000000", "password-of-a"))  # no such principal
    assert not await _refused(dial.client(NODE_A))


async def test_plaintext_connection_to_the_tls_port_fails(dial: Dial) -> None:
    """A plaintext CONNECT, even with good credentials, gets no CONNACK: the broker drops the connection."""
    name, password = NODE_A.encode(), USERS[NODE_A].password.encode()
    fields = [b"MQTT", name, name, password]  # protocol name, client id, username, password
    body = b"".join(len(f).to_bytes(2, "big") + f for f in fields[:1]) + bytes([4, 0xC2, 0, 10])
    body += b"".join(len(f).to_bytes(2, "big") + f for f in fields[1:])
    reader, writer = await asyncio.open_connection("127.0.0.1", dial.broker.port)
    try:
        writer.write(bytes([0x10, len(body)]) + body)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(5):  # the broker closes the connection...
                while chunk := await reader.read(1024):
                    answer += chunk
        assert not answer.startswith(b"\x20")  # ...having sent a TLS alert at most, never a CONNACK
    finally:
        writer.close()


async def test_server_certificate_verifies_against_the_cluster_ca_only(
    dial: Dial, security: BrokerSecurity
) -> None:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", dial.broker.port, ssl=client_context(security.ca_pem)
    )
    writer.close()
    other_ca, _ = make_ca("another-cluster")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", dial.broker.port, ssl=client_context(other_ca))


async def test_host_name_is_not_checked(security: BrokerSecurity) -> None:
    """Members dial the broker by whatever address mDNS gave, which the certificate does not name:
    127.0.0.2 is loopback too, but not in the certificate."""
    async with EmbeddedBroker(host="127.0.0.2", prefer="amqtt", security=security) as running:
        assert running.url.startswith("mqtts://127.0.0.2:")
        async with aiomqtt.Client(
            "127.0.0.2",
            running.port,
            username=NODE_A,
            password=USERS[NODE_A].password,
            tls_context=client_context(security.ca_pem),
        ):
            pass


async def test_replaced_users_lose_access_and_live_connections(dial: Dial) -> None:
    async with dial.client(ADMIN) as watcher, dial.client(NODE_B) as node_b:
        await node_b.subscribe(topic("#"), qos=1)
        await watcher.subscribe(topic("#"), qos=1)
        remaining = {k: v for k, v in USERS.items() if k != NODE_B}
        await dial.broker.replace_users(remaining)
        assert await _refused(dial.client(NODE_B, identifier="n-2be7c587-again"))
        # Its live connection is closed: the iteration of its messages ends with an error.
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(5):
                async for _ in node_b.messages:
                    pass
        # Nothing published after the revocation reaches it, and the others go on.
        async with dial.client(NODE_A) as node_a:
            await node_a.publish(topic(f"node/{NODE_A}/hb"), b"alive", qos=1)
        assert (topic(f"node/{NODE_A}/hb"), b"alive") in await _collect(watcher)
    await dial.broker.replace_users(USERS)
    assert not await _refused(dial.client(NODE_B))


@pytest.mark.parametrize(
    ("user", "target"),
    [
        (NODE_B, "trust/roster"),  # only an admin publishes the roster
        (VIEWER, "job/j1/spec"),  # a viewer does not submit
        (ADMIN, f"node/{NODE_A}/hb"),  # a user is no node
    ],
)
async def test_principals_cannot_publish_outside_their_acl(dial: Dial, user: str, target: str) -> None:
    forbidden = topic(target)
    async with dial.client(VIEWER, identifier="watcher") as watcher:
        await watcher.subscribe(topic("#"), qos=1)
        try:
            async with dial.client(user) as client:
                await client.publish(forbidden, b"forged", qos=1, retain=True)
                await client.publish(forbidden, b"forged", qos=0)
        except aiomqtt.MqttError:
            if dial.broker.kind != "mosquitto":
                raise  # only mosquitto disconnects a client for a denied publish
        # What the principal may publish still goes through, so silence above means refusal.
        allowed = topic(f"node/{user}/hb") if user.startswith("n-") else topic("coord/in")
        async with dial.client(user) as client:
            await client.publish(allowed, b"fine", qos=1)
        assert await _collect(watcher) == [(allowed, b"fine")]
    # Nor was anything retained.
    async with dial.client(VIEWER, identifier="late") as late:
        await late.subscribe(forbidden, qos=1)
        assert await _collect(late) == []


async def test_admin_publishes_trust_and_node_its_own_heartbeat(dial: Dial) -> None:
    async with dial.client(VIEWER) as watcher:
        await watcher.subscribe(topic("#"), qos=1)
        async with dial.client(ADMIN) as admin:
            await admin.publish(topic("trust/roster"), b"roster", qos=1)
            await admin.publish(topic("job/j1/spec"), b"spec", qos=1)
        async with dial.client(NODE_A) as node:
            await node.publish(topic(f"node/{NODE_A}/hb"), b"hb", qos=1)
            await node.publish(topic(f"node/{NODE_B}/in"), b"direct", qos=1)
            await node.publish(topic("job/j1/commits/1.0"), b"commit", qos=1)
        got = await _collect(watcher)
    assert [payload for _, payload in got] == [b"roster", b"spec", b"hb", b"direct", b"commit"]


async def test_subscription_outside_the_cluster_is_refused(dial: Dial) -> None:
    """amqtt refuses the subscription; mosquitto 2.0.11 grants it and checks read access for each
    message it would deliver, and no principal of this cluster may publish there anyway."""
    expected = 1 if dial.broker.kind == "mosquitto" else 0x80
    async with dial.client(NODE_A) as node:
        granted = await node.subscribe("swarm/other/#", qos=1)
        assert [int(getattr(code, "value", code)) for code in granted] == [expected]
        granted = await node.subscribe(topic("node/+/hb"), qos=1)
        assert [int(getattr(code, "value", code)) for code in granted] == [1]


async def test_no_takeover_of_a_live_session_without_credentials(dial: Dial) -> None:
    async with dial.client(ADMIN) as watcher:
        await watcher.subscribe(topic("#"), qos=1)
        async with dial.client(NODE_A, clean_session=False) as node_a:
            rogue = dial.client(
                NODE_B,
                "wrong-password",
                identifier=NODE_A,
                clean_session=False,
                will=aiomqtt.Will(topic("coord"), b"forged will", qos=1, retain=True),
            )
            assert await _refused(rogue)
            await node_a.publish(topic(f"node/{NODE_A}/hb"), b"still here", qos=1)
            assert await _collect(watcher) == [(topic(f"node/{NODE_A}/hb"), b"still here")]


async def test_a_will_cannot_reach_a_topic_its_owner_may_not_publish(dial: Dial) -> None:
    """amqtt refuses such a CONNECT; mosquitto 2.0.11 accepts it and drops the will when it fires."""
    async with dial.client(VIEWER, identifier="watcher") as watcher:
        await watcher.subscribe(topic("#"), qos=1)
        will = aiomqtt.Will(topic("trust/roster"), b"forged by will", qos=1, retain=True)
        client = dial.client(NODE_B, will=will)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError:
            assert dial.broker.kind == "amqtt"
        else:
            assert dial.broker.kind == "mosquitto"
            client._client.socket().close()  # die without a DISCONNECT: the will fires
        assert await _collect(watcher) == []
        if dial.broker.kind == "mosquitto":
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
