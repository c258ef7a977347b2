"""mDNS broker discovery, on loopback only.

Every zeroconf instance here gets interfaces=["127.0.0.1"], so no packet leaves the machine. Cluster
names are random so that parallel runs on one machine cannot see each other's brokers.
"""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest
from zeroconf import InterfaceChoice
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from swarm.runtime.discovery import (
    ENV_INTERFACES,
    SERVICE_TYPE,
    advertise_broker,
    browse_brokers,
    find_broker,
    mdns_interfaces,
)

pytestmark = pytest.mark.network

LOOPBACK = ["127.0.0.1"]


def _cluster() -> str:
    return f"test-{secrets.token_hex(4)}"


async def test_advertised_broker_is_found() -> None:
    cluster = _cluster()
    # Bound to every interface, the broker is advertised at the mDNS interfaces' addresses.
    async with advertise_broker(cluster, "0.0.0.0", 18830, "mosquitto", LOOPBACK) as name:
        assert name.endswith("._mqtt._tcp.local.")
        assert cluster in name
        assert await find_broker(cluster, timeout=5.0, interfaces=LOOPBACK) == "mqtts://127.0.0.1:18830"
        # One discovery takes over a second with current zeroconf: browse for longer than that.
        adverts = await browse_brokers(cluster, duration=2.5, interfaces=LOOPBACK)
    assert [(a.name, a.url, a.cluster, a.kind) for a in adverts] == [
        (name, "mqtts://127.0.0.1:18830", cluster, "mosquitto")
    ]


async def test_other_clusters_and_plain_mqtt_brokers_are_ignored() -> None:
    plain = AsyncServiceInfo(
        SERVICE_TYPE,
        f"plain-{secrets.token_hex(4)}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=18831,
        properties={"cluster": "mine"},  # no swarm=1: somebody's home-automation broker
        server=f"plain-{secrets.token_hex(4)}.local.",
    )
    aiozc = AsyncZeroconf(interfaces=LOOPBACK)
    mine, theirs = _cluster(), _cluster()
    try:
        registered = asyncio.ensure_future(aiozc.async_register_service(plain))
        async with advertise_broker(theirs, "127.0.0.1", 18832, "amqtt", LOOPBACK):
            await (await registered)
            assert await find_broker(mine, timeout=1.0, interfaces=LOOPBACK) is None
            # ...although the other cluster's broker was there to be seen:
            assert await find_broker(theirs, timeout=5.0, interfaces=LOOPBACK) == "mqtts://127.0.0.1:18832"
    finally:
        await aiozc.async_close()


async def test_find_broker_times_out_when_nothing_is_advertised() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await find_broker(_cluster(), timeout=0.5, interfaces=LOOPBACK) is None
    assert 0.4 < loop.time() - started < 2.0


def test_interfaces_come_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_INTERFACES, "192.0.2.7, 10.0.0.1")
    assert mdns_interfaces(["127.0.0.1"]) == ["127.0.0.1"]
    assert mdns_interfaces() == ["192.0.2.7", "10.0.0.1"]
    monkeypatch.delenv(ENV_INTERFACES)
    assert mdns_interfaces() is InterfaceChoice.All
