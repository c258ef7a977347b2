"""An append-only, hash-chained audit log of critical operations, one JSON object per line.

Each record names who did what, where, to what, and how it ended: `seq` (1, 2, ...), `time` (the
caller's clock; this module reads none), `actor` (a principal id such as ``u-3f2a9c01`` or
``n-1ad6b476``), the actor's `role`, the `node` it happened on, the `action` ("join", "revoke",
"token.create", "token.revoke", "submit", "cancel", "policy.change", "quota.change", "refused", ...),
its `target`, the `outcome` ("ok" or "refused: <reason>"), a small JSON object of `details`, `alg` (how
the chain is sealed), `prev` (the `hash` of the record before it; `GENESIS` for the first) and `hash`:
SHA-256, or HMAC-SHA-256 with the log's key, over the canonical JSON of the record without `hash`
(sorted keys, no spaces, ASCII). Every line is exactly that canonical JSON plus `hash`, so a reader can
check a line byte for byte.

Threat model
------------
The log is a file on one machine. `verify` finds:

* a record edited in place (its hash no longer matches), or a line rewritten in another form;
* a record deleted or inserted (a gap in `seq`, or `prev` that does not match), records reordered;
* the head cut off (the first record is not seq 1 chained to `GENESIS`);
* lines that are not records at all (malformed JSON, missing or extra fields).

Without a key, anyone who can write the file can also rewrite *all* of it with fresh hashes: the chain
then only catches accidents and clumsy edits. With a key (`AuditLog(path, key=...)`), each hash is an
HMAC, so rewriting records needs the key; keep the key where the file's writers cannot read it (the
node's secret store, not next to the log). Neither mode can tell that the newest records were cut off
the tail, or that the whole file was replaced by an older copy of itself: for that, keep the `head()`
(seq and hash) somewhere else now and then (another node, a retained message, a printout) and pass it
as `verify(anchor=...)`. The log is not secret (plain text), and `time` is what the appender said.

Crashes and concurrency
-----------------------
Appenders in several processes take an exclusive `flock` on the file, read the last record under it,
write one line with a single write and `fsync` it, so the chain never forks. A crash in the middle of a
write leaves a *torn* last line (no newline). `verify` reports it (`problem="torn"`); the next `append`
does not chain onto it: it replaces the fragment with an `audit.torn` record that chains onto the last
complete record and keeps the fragment's bytes (base64) and SHA-256 in its details, then appends its
own record. Nothing is lost and the repair is itself in the chain. A last *complete* line that is not a
valid record is not a crash but damage: `append` refuses to write (raises `AuditError`) rather than
chain onto garbage, until someone has looked (`verify` says where).

A log is keyed or not for its whole life: an appender with a key refuses to extend an unkeyed chain and
the other way round, so that a keyless process cannot downgrade a keyed log.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "GENESIS",
    "MAX_RECORD_BYTES",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "Problem",
    "VerifyReport",
    "canonical",
    "refused",
]

#: `prev` of the first record.
GENESIS = "0" * 64
#: A record (one line) may not be larger than this: details are meant to be small.
MAX_RECORD_BYTES = 64 * 1024
#: A torn fragment up to this size is kept whole (base64) in the `audit.torn` record; a larger one
#: only by its hash and length.
_KEEP_FRAGMENT_BYTES = 16 * 1024
_CHUNK = 64 * 1024
#: The most an append writes (a crash repair and a record) and so the longest torn fragment, plus a line.
_TAIL_LIMIT = 4 * MAX_RECORD_BYTES

_SHA256 = "sha256"
_HMAC = "hmac-sha256"
_TORN_ACTION = "audit.torn"

#: The fields of a record in file order, with their JSON types.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "seq": int,
    "time": float,
    "actor": str,
    "role": str,
    "node": str,
    "action": str,
    "target": str,
    "outcome": str,
    "details": dict,
    "alg": str,
    "prev": str,
    "hash": str,
}

Problem = Literal["edited", "deleted", "reordered", "truncated", "malformed", "torn", "key"]


class AuditError(Exception):
    """The audit log cannot be appended to or read as asked (damaged tail, wrong key mode)."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What one record says, before the log numbers it and seals it into the chain."""

    time: float
    actor: str
    role: str
    node: str
    action: str
    target: str = ""
    outcome: str = "ok"
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the log."""

    seq: int
    time: float
    actor: str
    role: str
    node: str
    action: str
    target: str
    outcome: str
    details: Mapping[str, Any]
    alg: str
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object its line holds."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "role": self.role,
            "node": self.node,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "details": dict(self.details),
            "alg": self.alg,
            "prev": self.prev,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found: `ok`, how many records it checked, and the first problem if any.

    `bad_seq` is the seq the first bad line has or should have had, `line` its 1-based line number,
    `problem` its kind and `reason` a sentence for people. `head` is `(seq, hash)` of the last good
    record, to keep as an anchor. `repaired` lists the seqs of `audit.torn` records (crash repairs).
    """

    ok: bool
    count: int
    head: tuple[int, str] | None = None
    bad_seq: int | None = None
    line: int | None = None
    problem: Problem | None = None
    reason: str = ""
    repaired: tuple[int, ...] = field(default_factory=tuple)


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The one byte form a record (or its hashed part) has: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def refused(reason: str) -> str:
    """The outcome text of a refused operation."""
    return f"refused: {reason}"


class AuditLog:
    """The audit log at `path`; `key` (bytes) seals the chain with HMAC-SHA-256 instead of SHA-256."""

    def __init__(self, path: str | os.PathLike[str], key: bytes | None = None) -> None:
        if key is not None and len(key) < 16:
            raise ValueError("an audit key must be at least 16 bytes")
        self.path = Path(path)
        self._key = key
        # Threads of one process serialise here; processes serialise on the file lock.
        self._lock = threading.Lock()

    @property
    def keyed(self) -> bool:
        """Whether this log's chain is sealed with a key."""
        return self._key is not None

    # --- writing --------------------------------------------------------------------------------

    def append(
        self,
        *,
        time: float,
        actor: str,
        role: str,
        node: str,
        action: str,
        target: str = "",
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Add one record, chained onto the last, and return it once it is on disk (fsync'd).

        Raises as `append_many` does.
        """
        entry = AuditEntry(time, actor, role, node, action, target, outcome, details)
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Add `entries` in order, each chained onto the one before, with one write and one fsync;
        return their records once they are on disk.

        Raises `ValueError`, with nothing written, for an entry this log cannot hold (empty names, a bad
        outcome, a NaN time, details that are not JSON or too large) and `AuditError` when the file's
        last complete line is not a valid record or its chain is sealed the other way (keyed / not keyed).
        """
        checked = [
            _checked_fields(e.time, e.actor, e.role, e.node, e.action, e.target, e.outcome, e.details)
            for e in entries
        ]
        if not checked:
            return []
        with self._lock, self._locked_fd(exclusive=True, create=True) as fd:
            size = os.fstat(fd).st_size
            last, fragment_at, fragment = _tail(fd, size)
            seq, prev = 0, GENESIS
            if last is not None:
                previous = _parse_record(last)
                if isinstance(previous, str):
                    raise AuditError(
                        f"the last complete record of {self.path} is damaged ({previous}); "
                        "verify the log before appending"
                    )
                if previous.alg != self._alg:
                    why = f"{self.path} is sealed with {previous.alg}; this appender uses {self._alg}"
                    raise AuditError(why)
                seq, prev = previous.seq, previous.hash
            out = bytearray()
            if fragment:
                first = checked[0]
                torn = self._seal(
                    seq + 1,
                    prev,
                    {
                        **first,
                        "actor": first["node"],
                        "role": "system",
                        "action": _TORN_ACTION,
                        "target": self.path.name,
                        "outcome": "ok",
                        "details": _fragment_details(fragment),
                    },
                )
                out += _line(torn)
                seq, prev = torn.seq, torn.hash
            records = []
            for fields in checked:
                record = self._seal(seq + 1, prev, fields)
                out += _line(record)
                seq, prev = record.seq, record.hash
                records.append(record)
            # Written at the end of what is complete, over a torn fragment if there is one.
            _write_all(fd, bytes(out), fragment_at)
            if fragment_at + len(out) < size:
                os.ftruncate(fd, fragment_at + len(out))
            os.fsync(fd)
            if size == 0:
                _fsync_dir(self.path.parent)
            return records

    @property
    def _alg(self) -> str:
        return _HMAC if self._key is not None else _SHA256

    def _seal(self, seq: int, prev: str, fields: Mapping[str, Any]) -> AuditRecord:
        body = {**fields, "seq": seq, "alg": self._alg, "prev": prev}
        digest = _digest(body, self._key)
        data = {**body, "hash": digest}
        if len(canonical(data)) + 1 > MAX_RECORD_BYTES:
            raise ValueError(f"audit record of more than {MAX_RECORD_BYTES} bytes: keep details small")
        return _record(data)

    # --- reading --------------------------------------------------------------------------------

    def records(self) -> Iterator[AuditRecord]:
        """Every record in file order. A torn last line (a crash while appending) is not yielded;
        any other line that is not a record raises `AuditError` with its line number."""
        for number, line, complete in self._lines():
            if not complete:
                return
            record = _parse_record(line)
            if isinstance(record, str):
                raise AuditError(f"{self.path}:{number}: {record}")
            yield record

    def head(self) -> tuple[int, str] | None:
        """`(seq, hash)` of the last complete record, or None for an empty log: keep it elsewhere as an
        anchor for `verify`, which then notices records cut off the tail."""
        with self._locked_fd(exclusive=False, create=False) as fd:
            if fd < 0:
                return None
            last, _, _ = _tail(fd, os.fstat(fd).st_size)
        if last is None:
            return None
        record = _parse_record(last)
        if isinstance(record, str):
            raise AuditError(f"the last record of {self.path} is damaged: {record}")
        return record.seq, record.hash

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """Check the whole chain; the report names the first bad record and why.

        With `anchor` (a `head()` kept earlier), the record of that seq must still be there with that hash.
        """
        checker = _Checker(self._key, anchor)
        lines = self._lines()
        for number, line, complete in lines:
            if not checker.check(number, line, complete, later=lines):
                return checker.report()
        checker.check_anchor()
        return checker.report()

    def _lines(self) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, line without its newline, whether it had one), up to the size the file had when
        reading began: appenders only ever add after that point or replace a torn tail."""
        with self._locked_fd(exclusive=False, create=False) as fd:
            size = os.fstat(fd).st_size if fd >= 0 else 0
        if size == 0:
            return
        with self.path.open("rb") as f:
            number, left = 0, size
            while left > 0:
                line = f.readline(left)
                if not line:
                    break
                left -= len(line)
                number += 1
                complete = line.endswith(b"\n")
                yield number, line[:-1] if complete else line, complete

    @contextlib.contextmanager
    def _locked_fd(self, *, exclusive: bool, create: bool) -> Iterator[int]:
        """The file, opened and locked; -1 when it does not exist and `create` is false."""
        flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
        try:
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            if create:
                raise
            yield -1
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock


# --- verification --------------------------------------------------------------------------------


class _Checker:
    """Walks the records in order, remembering the first problem."""

    def __init__(self, key: bytes | None, anchor: tuple[int, str] | None) -> None:
        self._key = key
        self._anchor = anchor
        self._anchored: str | None = None
        self.count = 0
        self.seq = 0
        self.prev = GENESIS
        self.repaired: list[int] = []
        self.problem: tuple[int, int | None, Problem, str] | None = None  # seq, line, kind, why

    def report(self) -> VerifyReport:
        """What was found so far."""
        head = (self.seq, self.prev) if self.count else None
        if self.problem is None:
            return VerifyReport(True, self.count, head, repaired=tuple(self.repaired))
        seq, line, problem, reason = self.problem
        return VerifyReport(False, self.count, head, seq, line, problem, reason, tuple(self.repaired))

    def _fail(self, line: int | None, problem: Problem, reason: str, seq: int | None = None) -> bool:
        self.problem = (self.seq + 1 if seq is None else seq, line, problem, reason)
        return False

    def check(
        self, number: int, line: bytes, complete: bool, later: Iterator[tuple[int, bytes, bool]]
    ) -> bool:
        """Check one line; False (and the problem recorded) when it is bad. `later` are the lines after
        it, looked at only to tell a reordering from a deletion."""
        if not complete:
            return self._fail(number, "torn", "the last line is incomplete: an append was interrupted")
        record = _parse_record(line)
        if isinstance(record, str):
            return self._fail(number, "malformed", record)
        if canonical(record.to_json()) != line:
            return self._fail(number, "edited", "the line is not in the form the log writes")
        if record.alg not in (_SHA256, _HMAC):
            return self._fail(number, "malformed", f"unknown seal {record.alg!r}")
        if self._key is not None and record.alg != _HMAC:
            return self._fail(number, "key", "the record is not sealed with the key (downgraded?)")
        if self._key is None and record.alg == _HMAC:
            return self._fail(number, "key", "the record is sealed with a key: verify needs the key")
        body = {k: v for k, v in record.to_json().items() if k != "hash"}
        if not hmac.compare_digest(_digest(body, self._key), record.hash):
            return self._fail(number, "edited", "the record does not match its hash")
        if record.seq != self.seq + 1:
            return self._misplaced(number, record, later)
        if record.prev != self.prev:
            if self.count == 0:
                return self._fail(number, "truncated", "the first record does not start the chain")
            why = f"prev is not the hash of record {self.seq}: a record before it was replaced"
            return self._fail(number, "edited", why)
        self.count += 1
        self.seq, self.prev = record.seq, record.hash
        if self._anchor is not None and record.seq == self._anchor[0]:
            self._anchored = record.hash
        if record.action == _TORN_ACTION:
            self.repaired.append(record.seq)
        return True

    def _misplaced(self, number: int, record: AuditRecord, later: Iterator[tuple[int, bytes, bool]]) -> bool:
        expected = self.seq + 1
        if self.count == 0 and record.seq > 1:
            return self._fail(number, "truncated", f"the log starts at record {record.seq}, not 1")
        if record.seq < expected:
            why = f"record {record.seq} comes after record {self.seq}"
            return self._fail(number, "reordered", why, record.seq)
        # A gap: the missing record either comes later (lines swapped) or nowhere (deleted).
        for _, line, _ in later:
            if b'"seq":%d,' % expected in line:
                found = _parse_record(line)
                if not isinstance(found, str) and found.seq == expected:
                    return self._fail(number, "reordered", f"record {expected} comes after {record.seq}")
        gap = f"record {expected}" if record.seq == expected + 1 else f"records {expected}..{record.seq - 1}"
        return self._fail(number, "deleted", f"{gap} missing before record {record.seq}")

    def check_anchor(self) -> None:
        """The anchored record must still be there, with the same hash."""
        if self._anchor is None or self.problem is not None:
            return
        seq, digest = self._anchor
        if seq > self.seq:
            self._fail(None, "truncated", f"the log ends at record {self.seq}; the anchor names {seq}")
        elif seq > 0 and not hmac.compare_digest(self._anchored or "", digest):
            self._fail(None, "edited", f"record {seq} is not the one the anchor names", seq)


# --- helpers -------------------------------------------------------------------------------------


def _checked_fields(
    time: float,
    actor: str,
    role: str,
    node: str,
    action: str,
    target: str,
    outcome: str,
    details: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
        raise ValueError(f"audit time must be a finite number, got {time!r}")
    named = {"actor": actor, "role": role, "node": node, "action": action}
    for name, value in named.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"audit {name} must be a non-empty string, got {value!r}")
    if not isinstance(target, str) or not isinstance(outcome, str):
        raise ValueError(f"audit target and outcome must be strings, got {target!r}, {outcome!r}")
    if outcome != "ok" and not (outcome.startswith("refused: ") and outcome[len("refused: ") :].strip()):
        raise ValueError(f"audit outcome must be 'ok' or 'refused: <reason>', got {outcome!r}")
    data = dict(details or {})
    try:
        # Round-trip once: what is stored must read back equal, or the hash would not match on verify.
        data = json.loads(canonical(data))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details must be a JSON object: {exc}") from None
    return {**named, "time": float(time), "target": target, "outcome": outcome, "details": data}


def _digest(body: Mapping[str, Any], key: bytes | None) -> str:
    data = canonical(body)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _line(record: AuditRecord) -> bytes:
    return canonical(record.to_json()) + b"\n"


def _record(data: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(**{name: data[name] for name in _FIELDS})


def _parse_record(line: bytes) -> AuditRecord | str:
    """The record on `line`, or why it is not one."""
    try:
        data = json.loads(line)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        return f"not JSON ({exc})"
    if not isinstance(data, dict):
        return "not a JSON object"
    if set(data) != set(_FIELDS):
        missing, extra = sorted(set(_FIELDS) - set(data)), sorted(set(data) - set(_FIELDS))
        return f"fields missing {missing} or unknown {extra}"
    for name, kind in _FIELDS.items():
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field {name!r} has the wrong type"
    return _record(data)


def _fragment_details(fragment: bytes) -> dict[str, Any]:
    details: dict[str, Any] = {"bytes": len(fragment), "sha256": hashlib.sha256(fragment).hexdigest()}
    if len(fragment) <= _KEEP_FRAGMENT_BYTES:
        details["fragment"] = base64.b64encode(fragment).decode("ascii")
    return details


def _tail(fd: int, size: int) -> tuple[bytes | None, int, bytes]:
    """(last complete line or None, offset where the unterminated fragment begins, the fragment).

    Reads backwards no further than any append could have written: an end of file longer than that
    without two newlines is not a log's end, and raises `AuditError`.
    """
    buf = b""
    pos = size
    while buf.count(b"\n") < 2 and pos > 0:
        if len(buf) > _TAIL_LIMIT:
            raise AuditError(f"the last {len(buf)} bytes of the log hold no complete record")
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
    last_nl = buf.rfind(b"\n")
    if last_nl < 0:  # no complete line at all
        return None, 0, buf
    fragment = buf[last_nl + 1 :]
    start = buf.rfind(b"\n", 0, last_nl) + 1
    return buf[start:last_nl], pos + last_nl + 1, fragment


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the file itself is synced
    finally:
        os.close(fd)
