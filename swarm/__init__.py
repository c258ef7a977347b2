"""swarm: one fault-tolerant compute swarm out of the computers people already own."""

from __future__ import annotations

__all__ = ["PROTOCOL_VERSION", "__version__"]

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
