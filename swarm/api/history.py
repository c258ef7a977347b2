"""The run history of DAGs on one node: definitions, runs, node executions and logs, in SQLite.

Theory of operation. Every node keeps its own copy, fed from replicated cluster records that may arrive
twice, late or out of order, so each write is an idempotent merge keyed by the record's identity, never
an append:

- a definition is keyed by (dag, version); of two different bodies for one key the later `created_at`
  wins (then the larger body, so that the outcome does not depend on arrival order);
- a run is keyed by its id; its state only moves forward (QUEUED < RUNNING < a final state), and of two
  final states the later `finished_at` wins; times known from any record are kept (earliest start);
- a node execution is keyed by (run, node, shard); a later attempt replaces an earlier one, and within
  one attempt a final state is never replaced by a live one;
- a log line is keyed by (run, node, time, message), so a repeated line is stored once.

Records of a run may come before the run itself, so there are no foreign keys; queries join on ids.
Outputs, errors and log text are bounded so that one chatty task cannot bloat every node's copy.
The object owns one connection and serialises calls with a lock, so it may be used from worker threads
(`asyncio.to_thread`); WAL lets readers of the file in other processes proceed during writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from swarm.errors import InvalidSpec
from swarm.runtime.artifacts import version_key

__all__ = ["FINAL_RUN_STATES", "MAX_OUTPUT_BYTES", "NODE_STATES", "RUN_STATES", "History", "RecordError"]

RUN_STATES = ("QUEUED", "RUNNING", "SUCCESS", "FAILED", "CANCELLED")
FINAL_RUN_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
#: Seed-facing node states, and the rank that decides which of two records of one attempt wins.
NODE_STATES = {
    "QUEUED": 0,
    "WAITING": 0,
    "RUNNING": 1,
    "SUCCESS": 2,
    "FAILED": 2,
    "SKIPPED": 2,
    "CANCELLED": 2,
}
#: The task engine's states (`swarm.messages.TaskState`), accepted and stored under their seed-facing names.
_NODE_ALIASES = {
    "waiting": "WAITING",
    "queued": "QUEUED",
    "running": "RUNNING",
    "done": "SUCCESS",
    "failed": "FAILED",
    "skipped": "SKIPPED",
    "cancelled": "CANCELLED",
}
_RUN_RANK = {"QUEUED": 0, "RUNNING": 1, "SUCCESS": 2, "FAILED": 2, "CANCELLED": 2}
MAX_OUTPUT_BYTES = 64 * 1024
MAX_TEXT_CHARS = 16 * 1024
MAX_QUERY_ROWS = 10_000
_DAY = 86_400.0

# Each entry moves the schema one version up; PRAGMA user_version counts the entries applied.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE dag_versions (
            dag_id TEXT NOT NULL, version TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
            created_at REAL NOT NULL, created_by TEXT NOT NULL, valid INTEGER NOT NULL,
            definition BLOB NOT NULL, PRIMARY KEY (dag_id, version)) WITHOUT ROWID""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, dag_id TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL,
            rank INTEGER NOT NULL, triggered_at REAL NOT NULL, started_at REAL, finished_at REAL,
            trigger TEXT NOT NULL, params BLOB, submitted_by TEXT NOT NULL)""",
        "CREATE INDEX runs_by_dag ON runs (dag_id, triggered_at DESC, run_id DESC)",
        "CREATE INDEX runs_by_time ON runs (triggered_at DESC, run_id DESC)",
        "CREATE INDEX runs_finished ON runs (dag_id, finished_at DESC) WHERE rank = 2",
        """CREATE TABLE node_executions (
            run_id TEXT NOT NULL, node_id TEXT NOT NULL, shard INTEGER NOT NULL, state TEXT NOT NULL,
            rank INTEGER NOT NULL, attempt INTEGER NOT NULL, device TEXT, started_at REAL NOT NULL,
            finished_at REAL NOT NULL, error TEXT, cpu_s REAL NOT NULL, peak_memory_mb REAL NOT NULL,
            bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, output_size INTEGER NOT NULL,
            output BLOB, log_tail TEXT NOT NULL, PRIMARY KEY (run_id, node_id, shard)) WITHOUT ROWID""",
        """CREATE TABLE logs (
            log_id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, node_id TEXT NOT NULL, at REAL NOT NULL,
            level TEXT NOT NULL, message TEXT NOT NULL, UNIQUE (run_id, node_id, at, message))""",
        "CREATE INDEX logs_by_node ON logs (run_id, node_id, at)",
    ),
    (
        """CREATE TABLE standards (
            name TEXT NOT NULL, version TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL,
            body BLOB NOT NULL, PRIMARY KEY (name, version)) WITHOUT ROWID""",
    ),
)

_RUN_UPSERT = """
INSERT INTO runs (run_id, dag_id, version, state, rank, triggered_at, started_at, finished_at, trigger,
                  params, submitted_by)
VALUES (:run_id, :dag_id, :version, :state, :rank, :triggered_at, :started_at, :finished_at, :trigger,
        :params, :submitted_by)
ON CONFLICT (run_id) DO UPDATE SET
  triggered_at = min(runs.triggered_at, excluded.triggered_at),
  started_at = CASE WHEN runs.started_at IS NULL THEN excluded.started_at
                    WHEN excluded.started_at IS NULL THEN runs.started_at
                    ELSE min(runs.started_at, excluded.started_at) END,
  params = coalesce(runs.params, excluded.params),
  submitted_by = CASE WHEN runs.submitted_by = '' THEN excluded.submitted_by ELSE runs.submitted_by END,
  state = CASE WHEN {win} THEN excluded.state ELSE runs.state END,
  finished_at = CASE WHEN {win} THEN excluded.finished_at ELSE runs.finished_at END,
  rank = max(runs.rank, excluded.rank)
""".format(
    win="(excluded.rank, coalesce(excluded.finished_at, 0), excluded.state)"
    " > (runs.rank, coalesce(runs.finished_at, 0), runs.state)"
)

_NODE_COLUMNS = (
    "run_id, node_id, shard, state, rank, attempt, device, started_at, finished_at, error, cpu_s,"
    " peak_memory_mb, bytes_in, bytes_out, output_size, output, log_tail"
)
_NODE_UPSERT = f"""
INSERT INTO node_executions ({_NODE_COLUMNS})
VALUES ({", ".join(":" + c.strip() for c in _NODE_COLUMNS.split(","))})
ON CONFLICT (run_id, node_id, shard) DO UPDATE SET
  {", ".join(f"{c} = excluded.{c}" for c in (c.strip() for c in _NODE_COLUMNS.split(",")[3:]))}
WHERE (excluded.attempt, excluded.rank, excluded.finished_at, excluded.state)
    > (node_executions.attempt, node_executions.rank, node_executions.finished_at, node_executions.state)
"""


class RecordError(InvalidSpec):
    """A history record is malformed (an unknown state, an output that is not JSON)."""


class History:
    """The history store of one node; see the module docstring for the merge rules."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        # the history is rebuilt from replicated records, so losing the last commits to a power cut is
        # acceptable, and NORMAL saves an fsync per transaction
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if current > len(MIGRATIONS):
                raise RecordError(
                    f"history schema version {current} is newer than this program's {len(MIGRATIONS)}"
                )
            for number, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in statements:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- definitions

    def put_definition(
        self,
        dag_id: str,
        version: str,
        definition: dict[str, Any],
        created_at: float,
        created_by: str,
        valid: bool,
        name: str = "",
        description: str = "",
    ) -> None:
        """Record a version of a DAG's definition."""
        body = _dumps(definition, "definition")
        with self._write() as db:
            db.execute(
                """INSERT INTO dag_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (dag_id, version) DO UPDATE SET name = excluded.name,
                  description = excluded.description, created_at = excluded.created_at,
                  created_by = excluded.created_by, valid = excluded.valid, definition = excluded.definition
                WHERE (excluded.created_at, excluded.definition)
                    > (dag_versions.created_at, dag_versions.definition)""",
                (dag_id, version, name, description, created_at, created_by, int(valid), body),
            )

    def definition(self, dag_id: str, version: str | None = None) -> dict[str, Any] | None:
        """A version of a DAG's definition (its highest version by semver when `version` is None)."""
        if version is None:
            version = self._latest_version(dag_id)
            if version is None:
                return None
        rows = self._read("SELECT * FROM dag_versions WHERE dag_id = ? AND version = ?", (dag_id, version))
        if not rows:
            return None
        record = _version_record(rows[0])
        del record["name"], record["description"]
        record["definition"] = orjson.loads(rows[0]["definition"])
        return record

    def put_standard(
        self, name: str, version: str, body: dict[str, Any], created_at: float, created_by: str
    ) -> None:
        """Record a task standard version (versions are immutable: the first body stays)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO standards VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING",
                (name, version, created_at, created_by, _dumps(body, "standard")),
            )

    def standards(self) -> list[dict[str, Any]]:
        """Every task standard version: name, version, createdAt, createdBy, standard (its JSON)."""
        rows = self._read("SELECT * FROM standards ORDER BY name, created_at")
        return [
            {
                "name": row["name"],
                "version": row["version"],
                "createdAt": row["created_at"],
                "createdBy": row["created_by"],
                "standard": orjson.loads(row["body"]),
            }
            for row in rows
        ]

    def _latest_version(self, dag_id: str) -> str | None:
        rows = self._read("SELECT version FROM dag_versions WHERE dag_id = ?", (dag_id,))
        return max((row["version"] for row in rows), key=version_key, default=None)

    def versions(self, dag_id: str) -> list[dict[str, Any]]:
        """Every version of a DAG, highest first, without the definition bodies."""
        rows = self._read(
            "SELECT dag_id, version, name, description, created_at, created_by, valid FROM dag_versions"
            " WHERE dag_id = ?",
            (dag_id,),
        )
        records = [_version_record(row) for row in rows]
        records.sort(key=lambda r: version_key(r["version"]), reverse=True)
        return records

    def dags(self) -> list[dict[str, Any]]:
        """One row per DAG known from a definition or a run, by id, with its latest version and last run."""
        versions: dict[str, list[sqlite3.Row]] = {}
        for row in self._read("SELECT dag_id, version, name, description FROM dag_versions"):
            versions.setdefault(row["dag_id"], []).append(row)
        last_runs = {
            row["dag_id"]: row
            for row in self._read(
                """SELECT dag_id, run_id, state, finished_at FROM (
                     SELECT dag_id, run_id, state, finished_at, row_number() OVER (
                       PARTITION BY dag_id ORDER BY triggered_at DESC, run_id DESC) AS n FROM runs)
                   WHERE n = 1"""
            )
        }
        result = []
        for dag_id in sorted(versions.keys() | last_runs.keys()):
            rows = versions.get(dag_id, [])
            latest = max(rows, key=lambda r: version_key(r["version"]), default=None)
            run = last_runs.get(dag_id)
            result.append(
                {
                    "dagId": dag_id,
                    "name": latest["name"] if latest else "",
                    "description": latest["description"] if latest else "",
                    "latestVersion": latest["version"] if latest else None,
                    "versions": len(rows),
                    "lastRun": None
                    if run is None
                    else {"runId": run["run_id"], "state": run["state"], "finishedAt": run["finished_at"]},
                }
            )
        return result

    # -- runs

    def put_run(
        self,
        run_id: str,
        dag_id: str,
        version: str,
        state: str,
        triggered_at: float,
        started_at: float | None = None,
        finished_at: float | None = None,
        trigger: str = "manual",
        params: dict[str, Any] | None = None,
        submitted_by: str = "",
    ) -> None:
        """Record what is known of a run; merged with what is stored (see the module docstring)."""
        if state not in _RUN_RANK:
            raise RecordError(f"run {run_id}: state: expected one of {', '.join(RUN_STATES)}, got {state!r}")
        row = {
            "run_id": run_id,
            "dag_id": dag_id,
            "version": version,
            "state": state,
            "rank": _RUN_RANK[state],
            "triggered_at": triggered_at,
            "started_at": started_at,
            "finished_at": finished_at,
            "trigger": trigger,
            "params": None if params is None else _dumps(params, f"run {run_id}: params"),
            "submitted_by": submitted_by,
        }
        with self._write() as db:
            db.execute(_RUN_UPSERT, row)

    def run(self, run_id: str) -> dict[str, Any] | None:
        """A run with its node executions (by start time), or None if unknown."""
        rows = self._read("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        record = _run_record(rows[0])
        nodes = self._read(
            "SELECT * FROM node_executions WHERE run_id = ? ORDER BY started_at, node_id, shard", (run_id,)
        )
        record["nodes"] = [_node_record(node) for node in nodes]
        return record

    def runs(
        self, dag_id: str | None = None, limit: int = 50, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs, newest trigger first, optionally of one DAG and in one state (at most `limit`)."""
        if state is not None and state not in _RUN_RANK:
            raise RecordError(f"state: expected one of {', '.join(RUN_STATES)}, got {state!r}")
        where, args = [], []
        if dag_id is not None:
            where.append("dag_id = ?")
            args.append(dag_id)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT * FROM runs {clause} ORDER BY triggered_at DESC, run_id DESC LIMIT ?",
            [*args, _bounded(limit)],
        )
        return [_run_record(row) for row in rows]

    # -- node executions

    def put_node(
        self,
        run_id: str,
        node_id: str,
        shard: int,
        state: str,
        attempt: int,
        device: str | None,
        started_at: float,
        finished_at: float,
        error: str | None = None,
        cpu_s: float = 0.0,
        peak_memory_mb: float = 0.0,
        bytes_in: int = 0,
        bytes_out: int = 0,
        output_size: int = 0,
        output: object = None,
        log_tail: str = "",
    ) -> None:
        """Record one execution of a node (one shard of it); see `put_nodes` for many at once."""
        self.put_nodes(
            [
                {
                    "run_id": run_id,
                    "node_id": node_id,
                    "shard": shard,
                    "state": state,
                    "attempt": attempt,
                    "device": device,
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "error": error,
                    "cpu_s": cpu_s,
                    "peak_memory_mb": peak_memory_mb,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "output_size": output_size,
                    "output": output,
                    "log_tail": log_tail,
                }
            ]
        )

    def put_nodes(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Record many node executions in one transaction; each row has `put_node`'s keyword arguments.
        Return how many rows were given."""
        prepared = [_node_row(row) for row in rows]
        with self._write() as db:
            db.executemany(_NODE_UPSERT, prepared)
        return len(prepared)

    # -- logs

    def add_log(self, run_id: str, node_id: str, at: float, level: str, message: str) -> None:
        """Record a log line of a run ("" as `node_id` for the run itself); a repeated line is stored once."""
        with self._write() as db:
            db.execute(
                "INSERT INTO logs (run_id, node_id, at, level, message) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (run_id, node_id, at, level, _clip(message)),
            )

    def logs(self, run_id: str, node_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The last `limit` log lines of a run (or of one of its nodes), oldest first."""
        node_clause, args = ("AND node_id = ?", [run_id, node_id]) if node_id is not None else ("", [run_id])
        rows = self._read(
            f"""SELECT * FROM (SELECT * FROM logs WHERE run_id = ? {node_clause}
                ORDER BY at DESC, log_id DESC LIMIT ?) ORDER BY at, log_id""",
            [*args, _bounded(limit)],
        )
        return [
            {
                "runId": r["run_id"],
                "nodeId": r["node_id"],
                "at": r["at"],
                "level": r["level"],
                "message": r["message"],
            }
            for r in rows
        ]

    # -- analysis and retention

    def samples(self, dag_id: str, last_runs: int = 50) -> list[dict[str, Any]]:
        """Node executions that ran to an end (SUCCESS or FAILED) in the DAG's last `last_runs` finished
        runs, newest run first: the inputs of duration estimates and failure rates."""
        rows = self._read(
            """SELECT n.run_id, n.node_id, n.started_at, n.finished_at - n.started_at AS duration_s,
                      n.state = 'SUCCESS' AS ok, n.cpu_s, n.peak_memory_mb, n.device  -- as insights.Sample
               FROM (SELECT run_id, finished_at FROM runs WHERE dag_id = ? AND rank = 2
                     ORDER BY finished_at DESC, run_id DESC LIMIT ?) AS r
               JOIN node_executions AS n ON n.run_id = r.run_id
               WHERE n.state IN ('SUCCESS', 'FAILED')
               ORDER BY r.finished_at DESC, r.run_id DESC, n.node_id, n.shard""",
            (dag_id, _bounded(last_runs)),
        )
        return [dict(row) | {"ok": bool(row["ok"]), "device": row["device"] or ""} for row in rows]

    def prune(self, now: float, keep_days: Mapping[str, int], default_days: int | None = None) -> list[str]:
        """Delete finished runs that finished more than their DAG's KEEP_N_DAYS ago (`keep_days[dag_id]`,
        else `default_days`, else keep them), with their node executions and logs. Return the ids of the
        runs deleted."""
        with self._write() as db:
            dag_ids = [row[0] for row in db.execute("SELECT DISTINCT dag_id FROM runs WHERE rank = 2")]
            doomed: list[str] = []
            for dag_id in dag_ids:
                days = keep_days.get(dag_id, default_days)
                if days is None:
                    continue
                cutoff = now - days * _DAY
                doomed += [
                    row[0]
                    for row in db.execute(
                        "SELECT run_id FROM runs WHERE dag_id = ? AND rank = 2 AND finished_at < ?",
                        (dag_id, cutoff),
                    )
                ]
            for table in ("logs", "node_executions", "runs"):
                for start in range(0, len(doomed), 500):  # bounded by SQLite's parameter limit
                    chunk = doomed[start : start + 500]
                    marks = ", ".join("?" * len(chunk))
                    db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", chunk)
            return doomed


# -- rows to records and back


def _dumps(value: object, what: str) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise RecordError(f"{what}: not JSON: {exc}") from exc


def _bounded_output(output: object, what: str) -> bytes:
    """The output as JSON of at most about MAX_OUTPUT_BYTES: an object's largest values are replaced, one
    by one, with `{"truncated": true, "bytes": n}` until it fits, so its small figures (counts, ranges)
    stay queryable beside a large text; anything else that is too large is replaced whole."""
    body = _dumps(output, what)
    if len(body) <= MAX_OUTPUT_BYTES:
        return body
    if isinstance(output, dict):
        sizes = {key: len(_dumps(value, what)) for key, value in output.items()}
        kept = dict(output)
        for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
            kept[key] = {"truncated": True, "bytes": sizes[key]}
            body = orjson.dumps(kept)
            if len(body) <= MAX_OUTPUT_BYTES:
                return body
    return orjson.dumps({"truncated": True, "bytes": len(body)})


def _clip(text: str, keep_end: bool = False) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return "..." + text[-MAX_TEXT_CHARS:] if keep_end else text[:MAX_TEXT_CHARS] + "..."


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_QUERY_ROWS))


def _node_row(row: Mapping[str, Any]) -> dict[str, Any]:
    where = f"node execution {row.get('run_id')}/{row.get('node_id')}"
    state = _NODE_ALIASES.get(row["state"], row["state"])
    if state not in NODE_STATES:
        raise RecordError(f"{where}: state: expected one of {', '.join(NODE_STATES)}, got {row['state']!r}")
    output = row.get("output")
    body = None if output is None else _bounded_output(output, f"{where}: output")
    error = row.get("error")
    return {
        "run_id": row["run_id"],
        "node_id": row["node_id"],
        "shard": int(row["shard"]),
        "state": state,
        "rank": NODE_STATES[state],
        "attempt": int(row["attempt"]),
        "device": row.get("device"),
        "started_at": float(row["started_at"]),
        "finished_at": float(row["finished_at"]),
        "error": None if error is None else _clip(error),
        "cpu_s": float(row.get("cpu_s", 0.0)),
        "peak_memory_mb": float(row.get("peak_memory_mb", 0.0)),
        "bytes_in": int(row.get("bytes_in", 0)),
        "bytes_out": int(row.get("bytes_out", 0)),
        "output_size": int(row.get("output_size", 0)),
        "output": body,
        "log_tail": _clip(row.get("log_tail", ""), keep_end=True),
    }


def _version_record(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "dagId": row["dag_id"],
        "version": row["version"],
        "name": row["name"],
        "description": row["description"],
        "createdAt": row["created_at"],
        "createdBy": row["created_by"],
        "valid": bool(row["valid"]),
    }


def _run_record(row: sqlite3.Row) -> dict[str, Any]:
    started, finished = row["started_at"], row["finished_at"]
    return {
        "runId": row["run_id"],
        "dagId": row["dag_id"],
        "version": row["version"],
        "state": row["state"],
        "trigger": row["trigger"],
        "triggeredAt": row["triggered_at"],
        "startedAt": started,
        "finishedAt": finished,
        "durationS": None if started is None or finished is None else finished - started,
        "params": None if row["params"] is None else orjson.loads(row["params"]),
        "submittedBy": row["submitted_by"],
    }


def _node_record(row: sqlite3.Row) -> dict[str, Any]:
    # A step's row keeps 0 for a time it does not have yet: not started (waiting, or skipped), or
    # not finished (running). Those are reported as unknown, not as the epoch.
    started, finished = row["started_at"] or None, row["finished_at"] or None
    return {
        "nodeId": row["node_id"],
        "shard": row["shard"],
        "state": row["state"],
        "attempt": row["attempt"],
        "device": row["device"],
        "startedAt": started,
        "finishedAt": finished,
        "durationS": None if started is None or finished is None else finished - started,
        "error": row["error"],
        "cpuS": row["cpu_s"],
        "peakMemoryMb": row["peak_memory_mb"],
        "bytesIn": row["bytes_in"],
        "bytesOut": row["bytes_out"],
        "outputSize": row["output_size"],
        "output": None if row["output"] is None else orjson.loads(row["output"]),
        "logTail": row["log_tail"],
    }
