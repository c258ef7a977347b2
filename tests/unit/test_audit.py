"""The audit log: a hash chain that notices edits, deletions, reorderings, truncation and torn writes."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from swarm.trust.audit import GENESIS, AuditEntry, AuditError, AuditLog, AuditRecord, canonical, refused

KEY = b"k" * 32


def _append(log: AuditLog, n: int, start: float = 100.0) -> list[AuditRecord]:
    actions = ("join", "token.create", "submit", "cancel", "refused")
    return [
        log.append(
            time=start + i,
            actor=f"u-{i:08x}",
            role="user" if i % 2 else "admin",
            node="n-1ad6b476",
            action=actions[i % len(actions)],
            target=f"job-{i}",
            outcome="ok" if i % 3 else refused("quota: no cores left"),
            details={"i": i, "tasks": [1, 2]},
        )
        for i in range(n)
    ]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _edit(line: bytes, **changes: Any) -> bytes:
    """The same record with fields changed, its hash left as it was (a naive tamperer)."""
    data = json.loads(line)
    data.update(changes)
    return canonical(data) + b"\n"


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl")


def test_append_chains_records_and_verify_accepts_them(log: AuditLog) -> None:
    records = _append(log, 5)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    assert list(log.records()) == records
    report = log.verify()
    assert report.ok and report.count == 5 and report.problem is None
    assert report.head == (5, records[-1].hash) == log.head()


def test_every_line_is_canonical_json_and_the_hash_covers_everything_else(log: AuditLog) -> None:
    (record,) = _append(log, 1)
    line = _lines(log.path)[0]
    data = json.loads(line)
    assert line == canonical(data) + b"\n"
    fields = "seq time actor role node action target outcome details alg prev hash"
    assert set(data) == set(fields.split())
    assert data["time"] == 100.0 and isinstance(data["time"], float)
    assert data["outcome"] == "refused: quota: no cores left"
    assert record.details == {"i": 0, "tasks": [1, 2]}


def test_an_empty_or_missing_log_verifies(log: AuditLog) -> None:
    assert log.verify().ok and log.verify().count == 0
    assert log.head() is None
    assert list(log.records()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("actor", "u-ffffffff"), ("outcome", "ok"), ("time", 1.5), ("details", {"i": 99}), ("target", "x")],
)
def test_a_tampered_field_fails_at_that_record(log: AuditLog, field: str, value: Any) -> None:
    _append(log, 6)
    lines = _lines(log.path)
    lines[3] = _edit(lines[3], **{field: value})
    _write(log.path, lines)
    report = log.verify()
    assert not report.ok
    assert (report.bad_seq, report.line, report.problem) == (4, 4, "edited")
    assert report.count == 3 and report.head is not None and report.head[0] == 3


def test_a_rehashed_edit_breaks_the_link_to_the_next_record(log: AuditLog) -> None:
    _append(log, 5)
    lines = _lines(log.path)
    data = json.loads(lines[1])
    data["actor"] = "u-00000bad"
    body = {k: v for k, v in data.items() if k != "hash"}
    data["hash"] = hashlib.sha256(canonical(body)).hexdigest()
    lines[1] = canonical(data) + b"\n"
    _write(log.path, lines)
    report = log.verify()
    assert (report.ok, report.bad_seq, report.problem) == (False, 3, "edited")
    assert "prev" in report.reason


def test_a_line_rewritten_in_another_form_is_an_edit(log: AuditLog) -> None:
    _append(log, 3)
    lines = _lines(log.path)
    lines[1] = json.dumps(json.loads(lines[1]), indent=1).replace("\n", " ").encode() + b"\n"
    _write(log.path, lines)
    report = log.verify()
    assert (report.bad_seq, report.problem) == (2, "edited")


def test_a_deleted_line_is_found(log: AuditLog) -> None:
    _append(log, 6)
    lines = _lines(log.path)
    del lines[2]
    _write(log.path, lines)
    report = log.verify()
    assert (report.ok, report.bad_seq, report.line, report.problem) == (False, 3, 3, "deleted")
    assert "record 3 missing" in report.reason


def test_swapped_lines_are_a_reordering(log: AuditLog) -> None:
    _append(log, 6)
    lines = _lines(log.path)
    lines[2], lines[3] = lines[3], lines[2]
    _write(log.path, lines)
    report = log.verify()
    assert (report.ok, report.bad_seq, report.problem) == (False, 3, "reordered")


def test_a_duplicated_line_is_a_reordering(log: AuditLog) -> None:
    _append(log, 4)
    lines = _lines(log.path)
    lines.insert(3, lines[1])
    _write(log.path, lines)
    report = log.verify()
    assert (report.ok, report.bad_seq, report.problem) == (False, 2, "reordered")


def test_a_cut_off_head_is_truncation(log: AuditLog) -> None:
    _append(log, 4)
    _write(log.path, _lines(log.path)[2:])
    report = log.verify()
    assert (report.ok, report.bad_seq, report.problem) == (False, 1, "truncated")


def test_a_cut_off_tail_is_found_only_against_an_anchor(log: AuditLog) -> None:
    _append(log, 5)
    anchor = log.head()
    assert anchor is not None
    _write(log.path, _lines(log.path)[:3])
    assert log.verify().ok  # nothing inside the file can tell
    report = log.verify(anchor=anchor)
    assert (report.ok, report.bad_seq, report.problem) == (False, 4, "truncated")


def test_an_anchor_catches_a_file_rewritten_from_that_record_on(tmp_path: Path) -> None:
    a = AuditLog(tmp_path / "a.jsonl")
    b = AuditLog(tmp_path / "b.jsonl")
    _append(a, 3)
    _append(b, 3, start=500.0)  # the same length, other contents
    anchor = a.head()
    assert anchor is not None and b.verify().ok
    report = b.verify(anchor=anchor)
    assert (report.ok, report.bad_seq, report.problem) == (False, 3, "edited")


@pytest.mark.parametrize("junk", [b"{not json\n", b"[1,2]\n", b'{"seq": 3}\n', b"\xff\xfe\n"])
def test_malformed_lines_are_reported_with_their_line_number(log: AuditLog, junk: bytes) -> None:
    _append(log, 4)
    lines = _lines(log.path)
    lines[2] = junk
    _write(log.path, lines)
    report = log.verify()
    assert (report.ok, report.bad_seq, report.line, report.problem) == (False, 3, 3, "malformed")
    with pytest.raises(AuditError, match=":3:"):
        list(log.records())


def test_a_torn_last_line_is_reported_and_repaired_by_the_next_append(log: AuditLog) -> None:
    records = _append(log, 3)
    whole = log.path.read_bytes()
    torn_line = _lines(log.path)[2]
    fragment = torn_line[: len(torn_line) // 2]
    log.path.write_bytes(whole[: -len(torn_line)] + fragment)  # a crash in the middle of record 3
    report = log.verify()
    assert (report.ok, report.bad_seq, report.problem, report.count) == (False, 3, "torn", 2)
    assert [r.seq for r in log.records()] == [1, 2]  # the torn line is not a record

    (new,) = _append(log, 1, start=200.0)
    repair, *_ = [r for r in log.records() if r.action == "audit.torn"]
    assert repair.seq == 3 and repair.prev == records[1].hash
    assert repair.details["bytes"] == len(fragment)
    assert base64.b64decode(repair.details["fragment"]) == fragment  # the evidence is kept, in the chain
    assert new.seq == 4 and new.prev == repair.hash
    report = log.verify()
    assert report.ok and report.count == 4 and report.repaired == (3,)


def test_a_torn_line_with_no_record_before_it_is_repaired(log: AuditLog) -> None:
    log.path.write_bytes(b'{"seq":1,"ti')
    (record,) = _append(log, 1)
    assert record.seq == 2 and log.verify().ok and log.verify().repaired == (1,)


def test_append_refuses_to_chain_onto_a_damaged_last_record(log: AuditLog) -> None:
    _append(log, 2)
    lines = _lines(log.path)
    lines[-1] = b"garbage\n"
    _write(log.path, lines)
    with pytest.raises(AuditError, match="damaged"):
        _append(log, 1)


def test_records_are_validated_before_they_are_written(log: AuditLog) -> None:
    good: dict[str, Any] = {"time": 1.0, "actor": "u-1", "role": "user", "node": "n-1", "action": "submit"}
    for bad in (
        {"time": float("nan")},
        {"time": True},
        {"actor": ""},
        {"outcome": "maybe"},
        {"outcome": "refused: "},
        {"details": {"x": object()}},
        {"details": {"x": float("inf")}},
        {"details": {"big": "x" * 70_000}},
    ):
        with pytest.raises(ValueError):
            log.append(**{**good, **bad})
    assert not log.path.exists() or log.verify().count == 0
    assert log.append(**good).seq == 1


def test_a_batch_is_chained_in_order_onto_what_is_there(log: AuditLog) -> None:
    before = _append(log, 2)
    entries = [AuditEntry(300.0 + i, f"u-{i}", "user", "n-1", "submit", f"job-{i}") for i in range(3)]
    batch = log.append_many(entries)
    assert [r.seq for r in batch] == [3, 4, 5] and [r.target for r in batch] == ["job-0", "job-1", "job-2"]
    assert batch[0].prev == before[-1].hash and batch[2].prev == batch[1].hash
    assert list(log.records()) == [*before, *batch] and log.verify().ok
    assert log.append_many([]) == []


def test_a_batch_with_one_bad_entry_writes_nothing(log: AuditLog) -> None:
    _append(log, 1)
    size = log.path.stat().st_size
    good = AuditEntry(1.0, "u-1", "user", "n-1", "submit")
    with pytest.raises(ValueError):
        log.append_many([good, AuditEntry(2.0, "", "user", "n-1", "submit"), good])
    assert log.path.stat().st_size == size


def test_a_batch_after_a_torn_line_repairs_it_first(log: AuditLog) -> None:
    _append(log, 1)
    log.path.write_bytes(log.path.read_bytes() + b'{"seq":2,"ti')
    batch = log.append_many([AuditEntry(5.0, "u-1", "user", "n-1", "submit", f"job-{i}") for i in range(2)])
    assert [r.seq for r in batch] == [3, 4]
    assert [r.action for r in log.records()] == ["join", "audit.torn", "submit", "submit"]
    assert log.verify().ok and log.verify().repaired == (2,)


def test_a_keyed_chain_needs_the_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    keyed = AuditLog(path, key=KEY)
    _append(keyed, 3)
    assert keyed.verify().ok
    assert AuditLog(path).verify().problem == "key"
    assert AuditLog(path, key=b"x" * 32).verify().problem == "edited"
    with pytest.raises(AuditError, match="sealed"):
        _append(AuditLog(path), 1)  # a keyless appender cannot downgrade the chain


def test_a_keyed_chain_resists_an_attacker_who_rewrites_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _append(AuditLog(path, key=KEY), 3)
    lines = _lines(path)
    # The attacker drops record 2 and rebuilds the rest with plain SHA-256, as without a key.
    forged = AuditLog(tmp_path / "forged.jsonl")
    for line in (lines[0], lines[2]):
        data = json.loads(line)
        forged.append(
            **{k: data[k] for k in ("time", "actor", "role", "node", "action", "target", "outcome")}
        )
    path.write_bytes(forged.path.read_bytes())
    report = AuditLog(path, key=KEY).verify()
    assert (report.ok, report.bad_seq, report.problem) == (False, 1, "key")


def test_a_key_must_not_be_trivially_short(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "a", key=b"short")


_WRITER = textwrap.dedent(
    """
    import sys
    from swarm.trust.audit import AuditLog

    path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = AuditLog(path)
    for i in range(count):
        log.append(time=float(i), actor=who, role="user", node="n-1", action="submit", details={"i": i})
    """
)


def test_concurrent_appenders_in_four_processes_keep_one_chain(log: AuditLog) -> None:
    count = 60
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(log.path), f"u-{p}", str(count)])
        for p in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    report = log.verify()
    assert report.ok, report
    assert report.count == 4 * count
    records = list(log.records())
    for p in range(4):
        mine = [r.details["i"] for r in records if r.actor == f"u-{p}"]
        assert mine == list(range(count))  # each writer's records in its own order, none lost
