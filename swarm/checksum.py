"""The one checksum swarm's data plane uses: blake2b with a 128-bit digest, in hex.

Run files, transfers between data servers and uploads all check the same digest, so a value computed
where a run is written can be verified wherever it arrives.
"""

from __future__ import annotations

import hashlib

__all__ = ["checksum_bytes", "new_hasher"]


def new_hasher() -> hashlib.blake2b:
    """A fresh hasher (blake2b-128: fast in pure CPython, and ample against accidental damage)."""
    return hashlib.blake2b(digest_size=16)


def checksum_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex checksum of `data`."""
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()
