"""Where a node's broker is: the configured one, one found over mDNS, or one this node starts.

Zero-setup `swarm join`: look for a broker advertised for the cluster; finding none, start one
(mosquitto when installed, amqtt otherwise) and advertise it. Two nodes that start together may both
start one; each then browses once more and, when another advertisement sorts before its own, stops its
broker and uses that one, so every node settles on the same broker. When the connection is lost, the
node looks again; survivors wait in the order of their rank among the last live members before
starting a broker themselves, so that normally only one of them does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from swarm.config import NodeConfig
from swarm.core.retry import Rng
from swarm.runtime.broker import EmbeddedBroker
from swarm.runtime.brokerconf import BrokerSecurity
from swarm.runtime.discovery import advertise_broker, browse_brokers, find_broker

__all__ = ["BrokerLocator"]

log = logging.getLogger(__name__)

RANK_STAGGER = 1.5
#: How long a node that just started a broker looks for another one started at the same moment. It
#: must outlast one discovery: with zeroconf 0.154 on loopback, finding and resolving an advert that
#: is already up took 1.1-1.2 s, so the 1.0 s this used to be could see nothing.
TIE_BREAK_BROWSE_S = 2.5


class BrokerLocator:
    """Finds or provides the broker; owns the embedded broker and its advertisement while they run."""

    def __init__(
        self, config: NodeConfig, data_dir: Path, rng: Rng, security: Callable[[], BrokerSecurity]
    ) -> None:
        """`security` says, when a broker is started, whom it admits and with which TLS material."""
        self._config = config
        self._data_dir = data_dir
        self._rng = rng
        self._security = security
        self._stack = contextlib.AsyncExitStack()
        self._broker: EmbeddedBroker | None = None
        self._last_url: str | None = None
        self.kind = "external" if config.broker else "unknown"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def locate(self, rank: int, failures: int) -> str:
        """The broker URL to connect to now; `rank` orders survivors that may start one."""
        if self._config.broker:
            return self._config.broker
        if self._broker is not None:
            return self._broker.url
        if self._last_url is not None and failures < 2:
            return self._last_url
        cluster = self._config.cluster
        while True:
            url = await find_broker(cluster, timeout=self._config.mdns_timeout)
            if url is not None:
                self._last_url, self.kind = url, "discovered"
                return url
            if not self._config.embedded_broker:
                log.warning("no broker for cluster %r found over mDNS; still looking", cluster)
                continue
            if rank > 0:
                # A survivor with a lower rank is probably starting one right now: give it the chance.
                await asyncio.sleep(rank * RANK_STAGGER * (0.8 + 0.4 * self._rng.random()))
                url = await find_broker(cluster, timeout=self._config.mdns_timeout)
                if url is not None:
                    self._last_url, self.kind = url, "discovered"
                    return url
            return await self._start_own()

    async def update_security(self, security: BrokerSecurity) -> None:
        """The roster changed: a broker this node runs admits exactly its principals from now on."""
        if self._broker is not None:
            await self._broker.replace_users(security.users)

    async def _start_own(self) -> str:
        listen = os.environ.get("SWARM_BROKER_LISTEN", "0.0.0.0")
        broker = EmbeddedBroker(
            host=listen, port=0, data_dir=self._data_dir / "broker", security=self._security()
        )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(broker)
        name = await stack.enter_async_context(
            advertise_broker(self._config.cluster, listen, broker.port, broker.kind)
        )
        adverts = await browse_brokers(self._config.cluster, duration=TIE_BREAK_BROWSE_S)
        if adverts and adverts[0].name != name:
            log.info(
                "another broker for %r started at the same time; using %s",
                self._config.cluster,
                adverts[0].url,
            )
            await stack.aclose()
            self._last_url, self.kind = adverts[0].url, "discovered"
            return adverts[0].url
        self._stack.push_async_callback(stack.aclose)
        self._broker, self.kind = broker, broker.kind
        log.info("started a %s broker at %s and advertised it over mDNS", broker.kind, broker.url)
        return broker.url
