"""The one checksum swarm's data plane uses: CRC-32 (zlib's, the IEEE polynomial), as 8 hex digits.

Run files, transfers between data servers and uploads all check the same value, so a checksum computed
where a run is written can be verified wherever it arrives.

Why CRC-32 and not a cryptographic hash: what it guards against is accidental damage (a flipped bit on
a phone's flash, a connection cut short, a mangled packet), the job HDFS, Kafka and Spark's shuffle give
the CRC family too. zlib's CRC-32 runs at about 2.3 GB/s per core here against 1.0 for blake2b, and a
large sort checksums every byte four times (written run, fetched run, uploaded output, stored output):
with blake2b that alone was more CPU than sorting. It catches every burst of up to 32 bits and any
other damage with probability 1 - 2**-32. It is no defence against a peer that forges data on purpose;
that belongs to the security model (authenticated transport), not to a checksum.
"""

from __future__ import annotations

import zlib

__all__ = ["Crc32", "checksum_bytes", "new_hasher"]


class Crc32:
    """An incremental CRC-32 with the `update`/`hexdigest` shape of a hashlib object.

    zlib releases the GIL while it checksums a large buffer, so a helper thread can overlap it with I/O.
    """

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Extend the checksum over `data`."""
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        """The checksum so far as 8 lowercase hex digits."""
        return f"{self.value:08x}"


def new_hasher() -> Crc32:
    """A fresh checksum."""
    return Crc32()


def checksum_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex checksum of `data`."""
    return f"{zlib.crc32(data):08x}"
