"""Which of this machine's addresses peers can reach, for the data servers' URLs."""

from __future__ import annotations

import os
import socket

from swarm.config import parse_broker_url

__all__ = ["advertised_host"]

#: TEST-NET-1 (RFC 5737): a destination for the route lookup when no broker address is known.
_ANY_ROUTE = ("192.0.2.1", 9)


def advertised_host(broker_url: str | None) -> str:
    """`$SWARM_DATA_HOST`, else this machine's address on the route to the broker (or the default route).

    Connecting a UDP socket only selects a route; nothing is sent.
    """
    explicit = os.environ.get("SWARM_DATA_HOST")
    if explicit:
        return explicit
    target = _ANY_ROUTE
    if broker_url:
        parsed = parse_broker_url(broker_url)
        target = (parsed.host, parsed.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(target)
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
