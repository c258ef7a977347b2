"""Find a cluster's broker on the LAN with mDNS, or advertise one, so `swarm join` needs no address.

Theory of operation: a node that runs a broker registers it as an `_mqtt._tcp.local.` service with
TXT properties `swarm=1`, `cluster=<name>`, `kind=mosquitto|amqtt` and `tls=1` (the broker a node
starts listens with TLS only). The MQTT service type is the
standard one, so generic MQTT tools see the broker too; the TXT properties let swarm ignore other
MQTT brokers and other clusters' brokers on the same LAN. Instance names carry a random suffix so two
brokers never collide.

Each lookup opens its own short-lived zeroconf instance, so it starts with an empty cache and only
brokers that answer now are found, never a stale record of one that died.

Interfaces: the `interfaces` argument wins, then the comma-separated `SWARM_MDNS_INTERFACES`
environment variable, then zeroconf's default (all IPv4 interfaces). Tests pass ["127.0.0.1"]:
multicast on loopback works on Linux even without the MULTICAST flag on `lo`, and nothing leaves the
machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from swarm.runtime.brokerconf import url_for

__all__ = [
    "ENV_INTERFACES",
    "SERVICE_TYPE",
    "BrokerAdvert",
    "advertise_broker",
    "browse_brokers",
    "find_broker",
    "mdns_interfaces",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_mqtt._tcp.local."
ENV_INTERFACES = "SWARM_MDNS_INTERFACES"
_MAX_LABEL_BYTES = 63  # a DNS label's limit, which the instance name must respect
_RESOLVE_TIMEOUT_MS = 1500

# What zeroconf accepts for its `interfaces` argument, as far as swarm uses it.
Interfaces = list[str] | InterfaceChoice


@dataclass(frozen=True, slots=True)
class BrokerAdvert:
    """One swarm broker seen on the network."""

    name: str
    """The mDNS instance name, unique per advertisement."""
    url: str
    cluster: str
    kind: str


def mdns_interfaces(interfaces: list[str] | None = None) -> Interfaces:
    """Decide which interfaces mDNS uses: the argument, else SWARM_MDNS_INTERFACES, else the default."""
    if interfaces is not None:
        return list(interfaces)
    from_env = [part.strip() for part in os.environ.get(ENV_INTERFACES, "").split(",") if part.strip()]
    if from_env:
        return list(from_env)
    return InterfaceChoice.All


@asynccontextmanager
async def advertise_broker(
    cluster: str, host: str, port: int, kind: str, interfaces: list[str] | None = None
) -> AsyncIterator[str]:
    """Advertise a broker for `cluster` while the context is open; yields the instance name.

    `host` is the address the broker listens on. A specific address is advertised as is; for one
    bound to every interface ("0.0.0.0", "::", "") the addresses of the chosen mDNS interfaces are
    advertised, loopback excluded unless that is all there is. On return from entering, the service
    has been announced; on exit it is withdrawn with goodbye packets.
    """
    addresses = await _addresses_to_advertise(host, interfaces)
    token = secrets.token_hex(4)
    instance = _instance_label(cluster, token)
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        f"{instance}.{SERVICE_TYPE}",
        addresses=[ipaddress.ip_address(a).packed for a in addresses],
        port=port,
        properties={"swarm": "1", "cluster": cluster, "kind": kind, "tls": "1"},
        server=f"swarm-{token}.local.",
    )
    aiozc = AsyncZeroconf(interfaces=mdns_interfaces(interfaces))
    try:
        announced = await aiozc.async_register_service(info, allow_name_change=True)
        await announced
        log.info("advertising %s broker for cluster %r on %s port %d", kind, cluster, addresses, port)
        yield info.name
    finally:
        with contextlib.suppress(Exception):  # withdrawing must not mask the reason we are leaving
            goodbye = await aiozc.async_unregister_service(info)
            await goodbye
        await aiozc.async_close()


async def find_broker(cluster: str, timeout: float, interfaces: list[str] | None = None) -> str | None:
    """Return "mqtt://host:port" of the first broker advertised for `cluster`, or None after `timeout`.

    Services without `swarm=1` and brokers of other clusters are ignored.
    """
    aiozc = AsyncZeroconf(interfaces=mdns_interfaces(interfaces))
    try:
        async with asyncio.timeout(timeout), contextlib.aclosing(_adverts(aiozc, cluster)) as adverts:
            async for advert in adverts:
                return advert.url
    except TimeoutError:
        pass
    finally:
        await aiozc.async_close()
    return None


async def browse_brokers(
    cluster: str, duration: float, interfaces: list[str] | None = None
) -> list[BrokerAdvert]:
    """Collect every broker advertised for `cluster` during `duration` seconds, sorted by name.

    Two nodes that started at the same moment may both have started a broker; every node that sees
    both sorts them the same way, so they can agree on one.
    """
    found: dict[str, BrokerAdvert] = {}
    aiozc = AsyncZeroconf(interfaces=mdns_interfaces(interfaces))
    try:
        async with asyncio.timeout(duration), contextlib.aclosing(_adverts(aiozc, cluster)) as adverts:
            async for advert in adverts:
                found[advert.name] = advert
    except TimeoutError:
        pass
    finally:
        await aiozc.async_close()
    return [found[name] for name in sorted(found)]


async def _adverts(aiozc: AsyncZeroconf, cluster: str) -> AsyncGenerator[BrokerAdvert, None]:
    """Yield the cluster's brokers as the browser discovers and resolves them, until cancelled."""
    names: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            loop.call_soon_threadsafe(names.put_nowait, name)

    browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        seen: set[str] = set()
        while True:
            name = await names.get()
            if name in seen:
                continue
            advert = await _resolve(aiozc, name, cluster)
            if advert is not None:
                seen.add(name)
                yield advert
    finally:
        await browser.async_cancel()


async def _resolve(aiozc: AsyncZeroconf, name: str, cluster: str) -> BrokerAdvert | None:
    """Fetch a service's address and TXT record; None unless it is a swarm broker of `cluster`."""
    info = AsyncServiceInfo(SERVICE_TYPE, name)
    if not await info.async_request(aiozc.zeroconf, _RESOLVE_TIMEOUT_MS):
        return None
    props = {
        key.decode(errors="replace"): (value or b"").decode(errors="replace")
        for key, value in info.properties.items()
    }
    if props.get("swarm") != "1" or props.get("cluster") != cluster or info.port is None:
        return None
    address = _best_address(info.parsed_addresses(IPVersion.All))
    if address is None:
        return None
    kind = props.get("kind", "")
    url = url_for(address, info.port, tls=props.get("tls") == "1")
    return BrokerAdvert(name=name, url=url, cluster=cluster, kind=kind)


def _best_address(candidates: list[str]) -> str | None:
    """Prefer an address another machine can reach: IPv4, then routable IPv6, then loopback.

    IPv6 link-local addresses are skipped: they need an interface scope the record does not carry.
    """
    ranked: list[tuple[int, str]] = []
    for text in candidates:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_link_local and address.version == 6:
            continue
        rank = (2 if address.is_loopback else 0) + (1 if address.version == 6 else 0)
        ranked.append((rank, text))
    return min(ranked)[1] if ranked else None


async def _addresses_to_advertise(host: str, interfaces: list[str] | None) -> list[str]:
    """The addresses peers should dial for a broker listening on `host`."""
    if host not in ("", "0.0.0.0", "::"):
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:  # a host name: advertise what it resolves to
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
            return sorted({str(info[4][0]) for info in infos})
    chosen = mdns_interfaces(interfaces)
    candidates = [a for a in chosen if _is_ip(a)] if isinstance(chosen, list) else _local_ipv4_addresses()
    routable = [a for a in candidates if not ipaddress.ip_address(a).is_loopback]
    return routable or candidates or ["127.0.0.1"]


def _local_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses (ifaddr comes with zeroconf, which uses it the same way)."""
    adapters = ifaddr.get_adapters()
    return sorted({ip.ip for adapter in adapters for ip in adapter.ips if isinstance(ip.ip, str)})


def _is_ip(text: object) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


def _instance_label(cluster: str, token: str) -> str:
    """A readable, unique instance name that fits one DNS label."""
    host = socket.gethostname().split(".")[0]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", f"swarm-{cluster}-{host}").strip("-")
    budget = _MAX_LABEL_BYTES - len(token) - 1
    return f"{readable[:budget]}-{token}"
