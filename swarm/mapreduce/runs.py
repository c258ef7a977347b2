"""Sorted runs on disk: the files a map task leaves for the reducers, and the spilling that bounds its memory.

A run file is self-describing, so a reducer needs nothing but its bytes (and, to be sure they are the
bytes the mapper wrote, the checksum the mapper reported). Layout, all integers little-endian:

    prefix   16 bytes   magic b"SWMRRUN\\0", version u16, flags u16 (0), header length u32
    header   JSON       count, key_dtype, value_dtype, value_shape (per record), compressed,
                        key_raw/value_raw (buffer sizes), key_stored/value_stored (sizes in the file)
    keys     key_stored bytes: the raw fixed-width key buffer, or its zlib (level 1) stream
    values   value_stored bytes: the same for the values
    trailer  8 bytes    b"SWEN", crc32 (u32) of everything before it

Every section starts on a 16-byte boundary (zero padding), so uncompressed arrays are read in place
with `np.frombuffer`, aligned. The checksum callers pass around is `swarm.checksum`'s (CRC-32, hex) of
the whole file, trailer included, so the writer gets it from the trailer's CRC for 8 more bytes; the
trailer alone catches corruption and truncation when no checksum is given. Dtypes are kept
with their byte order, so a run written on one platform reads correctly on any other.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from swarm.checksum import checksum_bytes, new_hasher
from swarm.mapreduce.kernels import (
    MERGE_OP,
    Keys,
    Values,
    combine,
    range_partition_of,
    split_sorted,
)
from swarm.mapreduce.merge import combine_runs, merge_sorted

__all__ = ["CorruptRun", "RunInfo", "Spiller", "file_checksum", "read_run", "write_run"]

MAGIC = b"SWMRRUN\0"
VERSION = 1
_PREFIX = struct.Struct("<8sHHI")
_TRAILER = struct.Struct("<4sI")
_TRAILER_MAGIC = b"SWEN"
_ALIGN = 16
_MAX_HEADER = 1 << 16


class CorruptRun(ValueError):
    """A run file is not what its writer wrote: bad magic, truncated, or its bytes changed."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A written run: where it is, how many records, its size in bytes, and its checksum."""

    path: Path
    count: int
    nbytes: int
    checksum: str


def _pad(size: int) -> bytes:
    return bytes(-size % _ALIGN)


def _raw(array: np.ndarray[Any, Any]) -> memoryview:
    """The array's buffer as bytes, without a copy when it is already contiguous."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _check_dtype(dtype: np.dtype[Any], what: str) -> str:
    if dtype.hasobject or dtype.kind == "V" or np.dtype(dtype.str) != dtype:
        raise TypeError(f"{what} of dtype {dtype} cannot be stored in a run (no objects or records)")
    return dtype.str


def write_run(path: str | os.PathLike[str], keys: Keys, values: Values, compress: bool = False) -> RunInfo:
    """Write a run atomically (temp file, rename): readers see the whole file or none of it.

    Not fsynced: a run is intermediate data whose map can always run again. A node killed keeps its
    page cache; a power cut that loses or tears a run makes its fetch fail the checksum (or find no
    file), and the reducer recomputes that map's partition. Syncing every run cost a sort about 30 ms
    per 64 MB map here, and far more on a phone's flash.
    """
    path = Path(path)
    if keys.dtype.kind != "S" or keys.ndim != 1:
        raise TypeError(f"keys must be a 1-D array of bytes (dtype 'S'), got {keys.dtype}")
    if values.ndim < 1 or len(values) != len(keys):
        raise ValueError(f"{len(keys)} keys but values of shape {values.shape}")
    key_raw, value_raw = _raw(keys), _raw(values)
    key_data: bytes | memoryview = zlib.compress(key_raw, 1) if compress else key_raw
    value_data: bytes | memoryview = zlib.compress(value_raw, 1) if compress else value_raw
    header = {
        "count": len(keys),
        "key_dtype": _check_dtype(keys.dtype, "keys"),
        "value_dtype": _check_dtype(values.dtype, "values"),
        "value_shape": list(values.shape[1:]),
        "compressed": compress,
        "key_raw": len(key_raw),
        "value_raw": len(value_raw),
        "key_stored": len(key_data),
        "value_stored": len(value_data),
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + _PREFIX.size) % _ALIGN)
    parts: list[bytes | memoryview] = [
        _PREFIX.pack(MAGIC, VERSION, 0, len(text)),
        text,
        key_data,
        _pad(len(key_data)),
        value_data,
        _pad(len(value_data)),
    ]
    digest = new_hasher()
    for part in parts:
        digest.update(part)
    trailer = _TRAILER.pack(_TRAILER_MAGIC, digest.value)
    digest.update(trailer)  # the file's checksum continues the trailer's CRC over the trailer itself
    parts.append(trailer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    size = 0
    try:
        with open(tmp, "xb") as f:
            for part in parts:
                f.write(part)
                size += len(part)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return RunInfo(path, len(keys), size, digest.hexdigest())


def file_checksum(data: bytes | bytearray | memoryview) -> str:
    """The checksum of a run's bytes, as `write_run` returns it."""
    return checksum_bytes(data)


def _load(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> memoryview:
    if isinstance(source, bytes | bytearray | memoryview):
        return memoryview(source).cast("B")
    with open(source, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        return view[:got]


def _int_field(header: dict[str, Any], name: str) -> int:
    value = header.get(name)
    if type(value) is not int or value < 0:
        raise CorruptRun(f"run header field {name!r} is {value!r}")
    return value


def _parse_header(data: memoryview) -> tuple[dict[str, Any], int]:
    """The header and the offset of the key section; CorruptRun if the prefix or header is malformed."""
    if len(data) < _PREFIX.size + _TRAILER.size:
        raise CorruptRun(f"run is {len(data)} bytes: truncated")
    magic, version, _flags, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CorruptRun("not a run file (bad magic)")
    if version != VERSION:
        raise CorruptRun(f"run format version {version} is not supported (expected {VERSION})")
    end = _PREFIX.size + header_len
    if header_len > _MAX_HEADER or end > len(data):
        raise CorruptRun("run header is truncated")
    try:
        header = json.loads(bytes(data[_PREFIX.size : end]))
    except ValueError as exc:
        raise CorruptRun(f"run header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CorruptRun("run header is not an object")
    return header, end


def _section(data: memoryview, offset: int, stored: int, raw: int, compressed: bool) -> tuple[Any, int]:
    chunk = data[offset : offset + stored]
    if compressed:
        try:
            out: Any = zlib.decompress(chunk, bufsize=max(raw, 1))
        except zlib.error as exc:
            raise CorruptRun(f"run section does not decompress: {exc}") from None
    else:
        out = chunk
    if len(out) != raw:
        raise CorruptRun(f"run section holds {len(out)} bytes, header says {raw}")
    return out, offset + stored + (-stored % _ALIGN)


def read_run(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
    expected_checksum: str | None = None,
    *,
    verified: bool = False,
) -> tuple[Keys, Values]:
    """The (keys, values) of a run file or of its bytes; CorruptRun rather than anything partial.

    With `expected_checksum` the whole file must hash to it; without, the crc32 trailer is checked,
    unless the caller says the bytes are `verified` already (a fetch checked them against the run's
    checksum): checking twice would cost a second pass over every shuffled byte. The header and sizes
    are checked either way. The arrays may be read-only views of the loaded bytes: copy them to
    modify them.
    """
    data = _load(path_or_bytes)
    if expected_checksum is not None:
        if file_checksum(data) != expected_checksum.lower():
            raise CorruptRun("run checksum mismatch: the file is damaged, truncated or another run")
    elif not verified:
        if len(data) < _TRAILER.size:
            raise CorruptRun(f"run is {len(data)} bytes: truncated")
        magic, crc = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
        if magic != _TRAILER_MAGIC or zlib.crc32(data[: len(data) - _TRAILER.size]) != crc:
            raise CorruptRun("run trailer does not match its contents: damaged or truncated")
    header, offset = _parse_header(data)
    try:
        count = _int_field(header, "count")
        key_dtype, value_dtype = np.dtype(header["key_dtype"]), np.dtype(header["value_dtype"])
        shape = tuple(int(d) for d in header["value_shape"])
        compressed = bool(header["compressed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRun(f"run header is malformed: {exc}") from None
    if key_dtype.kind != "S" or value_dtype.hasobject or any(d < 0 for d in shape):
        raise CorruptRun("run header names unsupported dtypes")
    key_raw, value_raw = _int_field(header, "key_raw"), _int_field(header, "value_raw")
    per_value = value_dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if key_raw != count * key_dtype.itemsize or value_raw != count * per_value:
        raise CorruptRun("run header sizes do not match its count and dtypes")
    key_stored, value_stored = _int_field(header, "key_stored"), _int_field(header, "value_stored")
    expected_size = offset + key_stored + (-key_stored % _ALIGN) + value_stored
    expected_size += -value_stored % _ALIGN + _TRAILER.size
    if len(data) != expected_size:
        raise CorruptRun(f"run is {len(data)} bytes, its header says {expected_size}")
    key_buf, offset = _section(data, offset, key_stored, key_raw, compressed)
    value_buf, _ = _section(data, offset, value_stored, value_raw, compressed)
    try:
        keys = np.frombuffer(key_buf, dtype=key_dtype, count=count)
        values = np.frombuffer(value_buf, dtype=value_dtype, count=value_raw // max(value_dtype.itemsize, 1))
        return keys, values.reshape((count, *shape))
    except ValueError as exc:
        raise CorruptRun(f"run sections do not match the header: {exc}") from None


class Spiller:
    """Collects a map task's output, spilling sorted runs to disk so that memory stays bounded.

    Output arrives as unsorted batches (`add`) or as runs already sorted for one partition
    (`add_partition`). Once the buffer passes `threshold_bytes`, each partition's share is sorted,
    merged and written as one spill run. `finish()` leaves one final run per partition
    (`<prefix>-<p>.run`), merging that partition's spills with what is still buffered one partition at
    a time: peak memory is about 3x the threshold (a spill sorts a copy) or the merge of the largest
    partition, whichever is larger, never the whole map output.

    `boundaries` switches `add` to range partitioning (len(boundaries) == reducers - 1). With a
    `combiner` everything added is raw map output: each spill is combined before it is written and the
    final merge combines again with `MERGE_OP[combiner]`, so final runs hold one partial aggregate per
    key (counts as int64). Equal keys keep their order of arrival within `add` and within
    `add_partition`, not between the two.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        reducers: int,
        threshold_bytes: int,
        compress: bool = False,
        *,
        combiner: str | None = None,
        boundaries: Keys | None = None,
        prefix: str = "part",
    ) -> None:
        if reducers < 1:
            raise ValueError(f"reducers must be at least 1, got {reducers}")
        if combiner is not None and combiner not in MERGE_OP:
            raise ValueError(f"combiner must be one of {', '.join(MERGE_OP)}, got {combiner!r}")
        if boundaries is not None and len(boundaries) != reducers - 1:
            raise ValueError(f"{reducers} reducers need {reducers - 1} boundaries, got {len(boundaries)}")
        self.directory = Path(directory)
        self.reducers = reducers
        self.threshold_bytes = threshold_bytes
        self.compress = compress
        self.combiner = combiner
        self.boundaries = boundaries
        self.prefix = prefix
        self._batches: list[tuple[Keys, Values]] = []  # unsorted, from add()
        self._pieces: list[list[tuple[Keys, Values]]] = [[] for _ in range(reducers)]  # sorted, per partition
        self._buffered = 0
        self._spills: list[list[RunInfo | None]] = []  # [spill][partition]; None: nothing in it
        self._empty: tuple[Keys, Values] | None = None  # dtypes for a partition that never gets a record
        self._finished = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes of keys and values held in memory, not yet spilled."""
        return self._buffered

    @property
    def spill_count(self) -> int:
        """How many times the buffer has been spilled to disk."""
        return len(self._spills)

    def add(self, keys: Keys, values: Values) -> None:
        """Buffer one unsorted batch of map output; spill when the buffer passes the threshold."""
        self._accept(keys, values)
        if len(keys):
            self._batches.append((keys, values))
            self._grow(keys.nbytes + values.nbytes)

    def add_partition(self, partition: int, sorted_keys: Keys, values: Values) -> None:
        """Buffer a run already sorted by key that belongs to `partition` (e.g. from `split_sorted`)."""
        self._accept(sorted_keys, values)
        if not 0 <= partition < self.reducers:
            raise ValueError(f"partition {partition} is not in [0, {self.reducers})")
        if len(sorted_keys):
            self._pieces[partition].append((sorted_keys, values))
            self._grow(sorted_keys.nbytes + values.nbytes)

    def _accept(self, keys: Keys, values: Values) -> None:
        if self._finished:
            raise RuntimeError("Spiller is finished")
        if keys.dtype.kind != "S" or keys.ndim != 1 or len(values) != len(keys):
            raise ValueError(f"need 1-D 'S' keys and as many values: got {keys.dtype}, {len(values)}")
        if self._empty is None:
            self._empty = (keys[:0], values[:0])

    def _grow(self, nbytes: int) -> None:
        self._buffered += nbytes
        if self._buffered >= self.threshold_bytes:
            runs = self._take_buffer()
            spill = len(self._spills)
            self._spills.append(
                [
                    write_run(self._path(p, spill), k, v, self.compress) if len(k) else None
                    for p, (k, v) in enumerate(runs)
                ]
            )

    def _take_buffer(self) -> list[tuple[Keys, Values]]:
        """Empty the buffer into one sorted (and combined, with a combiner) run per partition."""
        pieces, self._pieces = self._pieces, [[] for _ in range(self.reducers)]
        if self._batches:
            keys, values = self._batches[0]
            if len(self._batches) > 1:
                keys = np.concatenate([k for k, _ in self._batches])
                values = np.concatenate([v for _, v in self._batches])
            parts = None if self.boundaries is None else range_partition_of(keys, self.boundaries)
            for p, run in enumerate(split_sorted(keys, values, self.reducers, parts)):
                pieces[p].append(run)
        self._batches, self._buffered = [], 0
        return [self._merge(runs, self.combiner) for runs in pieces]

    def _merge(self, runs: list[tuple[Keys, Values]], op: str | None) -> tuple[Keys, Values]:
        runs = [run for run in runs if len(run[0])]
        if not runs:  # still the dtypes the partition would have had
            keys, values = self._empty if self._empty is not None else (np.zeros(0, "S1"), np.zeros(0))
            return (keys, values) if self.combiner is None else combine(keys, values, self.combiner)
        return merge_sorted(runs) if op is None else combine_runs(runs, op)

    def _path(self, partition: int, spill: int | None = None) -> Path:
        kind = "" if spill is None else f"spill{spill}-"
        return self.directory / f"{self.prefix}-{kind}{partition}.run"

    def finish(self) -> list[RunInfo]:
        """One final run per partition, in partition order; the spill files are removed."""
        if self._finished:
            raise RuntimeError("Spiller.finish called twice")
        self._finished = True
        if self._spills and not self._buffered and len(self._spills) == 1:
            return [self._promote(p, info) for p, info in enumerate(self._spills[0])]
        remainder = self._take_buffer()
        op = None if self.combiner is None else MERGE_OP[self.combiner]
        finals = []
        for p in range(self.reducers):  # one partition in memory at a time
            spilled = [spill[p] for spill in self._spills]
            runs = [read_run(info.path, info.checksum) for info in spilled if info is not None]
            keys, values = self._merge([*runs, remainder[p]], op if runs else None)
            finals.append(write_run(self._path(p), keys, values, self.compress))
            for info in spilled:
                if info is not None:
                    info.path.unlink(missing_ok=True)
        return finals

    def _promote(self, partition: int, info: RunInfo | None) -> RunInfo:
        """A single spill already is the final run: rename it instead of rewriting it."""
        final = self._path(partition)
        if info is None:
            keys, values = self._merge([], None)
            return write_run(final, keys, values, self.compress)
        os.replace(info.path, final)
        return replace(info, path=final)
