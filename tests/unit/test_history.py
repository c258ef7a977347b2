"""The history store: idempotent merges of replicated records, ordering, semver, retention, bulk speed."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.api.history import MAX_OUTPUT_BYTES, MIGRATIONS, History, RecordError
from swarm.errors import InvalidSpec

DAY = 86_400.0


@pytest.fixture
def history() -> Iterator[History]:
    store = History(":memory:")
    yield store
    store.close()


def node(run_id: str, node_id: str, state: str = "SUCCESS", attempt: int = 1, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_id,
        "node_id": node_id,
        "shard": 0,
        "state": state,
        "attempt": attempt,
        "device": "dev-1",
        "started_at": 100.0,
        "finished_at": 103.0,
    }
    return row | extra


def snapshot(history: History, run_id: str) -> Any:
    return history.run(run_id), history.logs(run_id)


# -- idempotence


RUN_RECORDS: list[dict[str, Any]] = [
    {"state": "QUEUED", "triggered_at": 10.0},
    {"state": "RUNNING", "triggered_at": 10.0, "started_at": 11.0},
    {"state": "SUCCESS", "triggered_at": 10.0, "started_at": 11.0, "finished_at": 20.0},
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_run_records_in_any_order_or_twice_give_the_same_row(order: tuple[int, ...]) -> None:
    results = []
    for records in ([RUN_RECORDS[i] for i in order], RUN_RECORDS + RUN_RECORDS[::-1]):
        store = History(":memory:")
        for record in records:
            store.put_run("r1", "sales", "1.0.0", params={"region": "EU"}, **record)
        results.append(store.run("r1"))
        store.close()
    assert results[0] == results[1]
    run = results[0]
    assert run is not None
    assert (run["state"], run["startedAt"], run["finishedAt"], run["durationS"]) == (
        "SUCCESS",
        11.0,
        20.0,
        9.0,
    )
    assert run["params"] == {"region": "EU"}


def test_a_final_run_state_is_never_replaced_by_a_live_one(history: History) -> None:
    history.put_run("r1", "sales", "1.0.0", "CANCELLED", 10.0, 11.0, 12.0)
    history.put_run("r1", "sales", "1.0.0", "RUNNING", 10.0, 11.0)
    history.put_run("r1", "sales", "1.0.0", "QUEUED", 10.0)
    run = history.run("r1")
    assert run is not None
    assert (run["state"], run["finishedAt"]) == ("CANCELLED", 12.0)


def test_node_records_in_any_order_or_twice_give_the_same_rows() -> None:
    records = [
        node("r1", "a", "RUNNING", attempt=1, finished_at=0.0),
        node("r1", "a", "FAILED", attempt=1, error="boom"),
        node("r1", "a", "RUNNING", attempt=2, finished_at=0.0),
        node("r1", "a", "done", attempt=2, output={"rows": 5}),
        node("r1", "b", "skipped"),
        node("r1", "c", "running", finished_at=0.0),
    ]
    seen = []
    for order in (records, records[::-1], records[2:] + records + records[:2]):
        store = History(":memory:")
        for record in order:
            store.put_node(**record)
        seen.append(store.run("r1"))  # None: no run record yet, nodes still kept
        store.put_run("r1", "sales", "1.0.0", "SUCCESS", 1.0, 2.0, 3.0)
        seen.append(store.run("r1"))
        store.close()
    assert seen[0] is None
    assert seen[1] == seen[3] == seen[5]
    assert seen[1] is not None
    nodes = {n["nodeId"]: n for n in seen[1]["nodes"]}
    assert (nodes["a"]["state"], nodes["a"]["attempt"], nodes["a"]["output"]) == ("SUCCESS", 2, {"rows": 5})
    assert nodes["a"]["error"] is None  # the later attempt replaced the failed one whole
    assert nodes["b"]["state"] == "SKIPPED"  # the task engine's names are stored under the seed's
    assert nodes["c"]["state"] == "RUNNING"
    # A running step has no end yet, so no duration (not its start time since the epoch, negated).
    assert nodes["c"]["finishedAt"] is None and nodes["c"]["durationS"] is None
    assert nodes["a"]["durationS"] == nodes["a"]["finishedAt"] - nodes["a"]["startedAt"] >= 0


def test_a_final_node_state_is_not_replaced_by_a_live_one_of_the_same_attempt(history: History) -> None:
    history.put_node(**node("r1", "a", "SUCCESS", output={"x": 1}))
    history.put_node(**node("r1", "a", "RUNNING", finished_at=0.0))
    history.put_node(**node("r1", "a", "QUEUED", finished_at=0.0))
    history.put_run("r1", "sales", "1.0.0", "RUNNING", 1.0)
    run = history.run("r1")
    assert run is not None
    assert [(n["state"], n["output"]) for n in run["nodes"]] == [("SUCCESS", {"x": 1})]


def test_definitions_and_logs_fed_twice_are_stored_once(history: History) -> None:
    for _ in range(2):
        history.put_definition("sales", "1.0.0", {"nodes": []}, 5.0, "alice", True, name="Sales")
        history.add_log("r1", "a", 1.0, "INFO", "started")
        history.add_log("r1", "a", 2.0, "INFO", "finished")
        history.add_log(
            "r1", "", 2.0, "INFO", "finished"
        )  # the same text from the run itself is its own line
    assert len(history.versions("sales")) == 1
    assert [(line["nodeId"], line["message"]) for line in history.logs("r1")] == [
        ("a", "started"),
        ("a", "finished"),
        ("", "finished"),
    ]
    assert [line["message"] for line in history.logs("r1", "a")] == ["started", "finished"]


def test_two_bodies_for_one_definition_version_settle_on_the_later_in_any_order() -> None:
    winners = []
    for first, second in [
        ((1.0, {"v": "old"}), (2.0, {"v": "new"})),
        ((2.0, {"v": "new"}), (1.0, {"v": "old"})),
    ]:
        store = History(":memory:")
        for created_at, body in (first, second):
            store.put_definition("sales", "1.0.0", body, created_at, "alice", True)
        winners.append(store.definition("sales", "1.0.0"))
        store.close()
    assert winners[0] == winners[1]
    assert winners[0] is not None
    assert winners[0]["definition"] == {"v": "new"}


# -- queries


def test_runs_are_newest_first_and_filtered(history: History) -> None:
    for i, (dag, state) in enumerate([("a", "SUCCESS"), ("b", "FAILED"), ("a", "FAILED"), ("a", "RUNNING")]):
        history.put_run(f"r{i}", dag, "1.0.0", state, triggered_at=100.0 + i)
    assert [r["runId"] for r in history.runs()] == ["r3", "r2", "r1", "r0"]
    assert [r["runId"] for r in history.runs("a")] == ["r3", "r2", "r0"]
    assert [r["runId"] for r in history.runs("a", state="FAILED")] == ["r2"]
    assert [r["runId"] for r in history.runs(limit=2)] == ["r3", "r2"]
    assert history.runs("nothing") == []
    with pytest.raises(RecordError, match="state: expected one of"):
        history.runs(state="DONE")


def test_latest_definition_is_the_highest_semver(history: History) -> None:
    for created_at, version in enumerate(["1.10.0", "1.9.0", "1.2.0", "1.10.0-rc.1"]):
        history.put_definition(
            "sales", version, {"v": version}, float(created_at), "alice", True, name=version
        )
    latest = history.definition("sales")
    assert latest is not None
    assert latest["version"] == "1.10.0"
    assert latest["definition"] == {"v": "1.10.0"}
    assert [v["version"] for v in history.versions("sales")] == ["1.10.0", "1.10.0-rc.1", "1.9.0", "1.2.0"]
    assert history.definition("sales", "1.2.0") is not None
    assert history.definition("sales", "3.0.0") is None
    assert history.definition("unknown") is None


def test_dags_lists_each_dag_with_its_latest_version_and_last_run(history: History) -> None:
    history.put_definition("sales", "1.9.0", {}, 1.0, "alice", True, name="Old", description="d1")
    history.put_definition("sales", "1.10.0", {}, 2.0, "alice", False, name="Sales", description="d2")
    history.put_run("r1", "sales", "1.9.0", "SUCCESS", 10.0, 11.0, 12.0)
    history.put_run("r2", "sales", "1.10.0", "FAILED", 20.0, 21.0, 22.0)
    history.put_run("r3", "orphan", "1.0.0", "RUNNING", 5.0)  # a run whose definition has not arrived yet
    assert history.dags() == [
        {
            "dagId": "orphan",
            "name": "",
            "description": "",
            "latestVersion": None,
            "versions": 0,
            "lastRun": {"runId": "r3", "state": "RUNNING", "finishedAt": None},
        },
        {
            "dagId": "sales",
            "name": "Sales",
            "description": "d2",
            "latestVersion": "1.10.0",
            "versions": 2,
            "lastRun": {"runId": "r2", "state": "FAILED", "finishedAt": 22.0},
        },
    ]


def test_logs_keep_the_last_lines_oldest_first(history: History) -> None:
    for i in range(10):
        history.add_log("r1", "a", float(i), "INFO", f"line {i}")
    history.add_log("r2", "a", 1.0, "INFO", "other run")
    assert [line["message"] for line in history.logs("r1", limit=3)] == ["line 7", "line 8", "line 9"]
    assert history.logs("r1", "b") == []


def test_samples_cover_the_last_finished_runs_only(history: History) -> None:
    for i in range(4):
        history.put_run(f"r{i}", "sales", "1.0.0", "SUCCESS", 10.0 * i, 10.0 * i, 10.0 * i + 5)
        history.put_node(**node(f"r{i}", "a", started_at=10.0 * i, finished_at=10.0 * i + 2, cpu_s=1.5))
        history.put_node(**node(f"r{i}", "b", "FAILED", started_at=10.0 * i, finished_at=10.0 * i + 4))
        history.put_node(**node(f"r{i}", "c", "SKIPPED"))
    history.put_run("live", "sales", "1.0.0", "RUNNING", 99.0)
    history.put_node(**node("live", "a"))
    samples = history.samples("sales", last_runs=2)
    assert [(s["run_id"], s["node_id"], s["ok"], s["duration_s"]) for s in samples] == [
        ("r3", "a", True, 2.0),
        ("r3", "b", False, 4.0),
        ("r2", "a", True, 2.0),
        ("r2", "b", False, 4.0),
    ]
    assert samples[0]["cpu_s"] == 1.5
    assert samples[0]["device"] == "dev-1"
    history.put_node(**node("r3", "d", device=None))
    assert history.samples("sales", last_runs=1)[2]["device"] == ""  # as `insights.Sample` types it
    assert history.samples("other") == []


# -- bounds and bad input


def test_large_outputs_and_texts_are_bounded(history: History) -> None:
    big = {"blob": "x" * (MAX_OUTPUT_BYTES + 1), "rows": 7}
    history.put_node(**node("r1", "a", output=big, log_tail="start\n" + "y" * 100_000 + "\nend"))
    history.put_node(**node("r1", "b", output={"small": [1, 2]}))
    history.put_run("r1", "sales", "1.0.0", "SUCCESS", 1.0, 2.0, 3.0)
    run = history.run("r1")
    assert run is not None
    a, b = run["nodes"]
    # The large value is replaced, the small ones beside it stay.
    assert a["output"] == {"blob": {"truncated": True, "bytes": MAX_OUTPUT_BYTES + 3}, "rows": 7}
    assert a["logTail"].endswith("\nend")  # the tail is what matters in a log
    assert len(a["logTail"]) < 20_000
    assert b["output"] == {"small": [1, 2]}
    history.put_node(**node("r2", "a", output=["x" * MAX_OUTPUT_BYTES]))
    history.put_run("r2", "sales", "1.0.0", "SUCCESS", 1.0, 2.0, 3.0)
    run = history.run("r2")
    assert run is not None and run["nodes"][0]["output"] == {"truncated": True, "bytes": MAX_OUTPUT_BYTES + 4}


def test_bad_records_are_refused_naming_the_field(history: History) -> None:
    with pytest.raises(RecordError, match=r"run r1: state: expected one of .* got 'DONE'"):
        history.put_run("r1", "sales", "1.0.0", "DONE", 1.0)
    with pytest.raises(RecordError, match=r"node execution r1/a: state"):
        history.put_node(**node("r1", "a", "finished"))
    with pytest.raises(InvalidSpec, match=r"node execution r1/a: output: not JSON"):
        history.put_node(**node("r1", "a", output={"when": object()}))
    # a bad row in a batch leaves nothing of the batch behind
    with pytest.raises(RecordError):
        history.put_nodes([node("r1", "ok"), node("r1", "bad", "nope")])
    history.put_run("r1", "sales", "1.0.0", "RUNNING", 1.0)
    run = history.run("r1")
    assert run is not None
    assert run["nodes"] == []


# -- retention


def test_prune_deletes_finished_runs_past_their_dags_retention(history: History) -> None:
    now = 100 * DAY
    history.put_run("old-a", "a", "1.0.0", "SUCCESS", 0.0, 0.0, now - 10 * DAY)
    history.put_run("new-a", "a", "1.0.0", "FAILED", 0.0, 0.0, now - 2 * DAY)
    history.put_run("old-b", "b", "1.0.0", "SUCCESS", 0.0, 0.0, now - 10 * DAY)
    history.put_run("live-a", "a", "1.0.0", "RUNNING", 0.0, 0.0)
    history.put_run("old-c", "c", "1.0.0", "CANCELLED", 0.0, 0.0, now - 50 * DAY)
    history.put_nodes([node("old-a", "x"), node("old-a", "y"), node("new-a", "x")])
    history.add_log("old-a", "x", 1.0, "INFO", "hello")
    assert history.prune(now, {"a": 7, "b": 30}) == ["old-a"]
    assert {r["runId"] for r in history.runs()} == {"new-a", "old-b", "live-a", "old-c"}
    assert history.logs("old-a") == [] and history.run("old-a") is None  # its executions and logs too
    assert history.prune(now, {"a": 7, "b": 30}) == []
    assert history.prune(now, {"a": 7, "b": 30}, default_days=30) == ["old-c"]  # under the default
    assert history.run("new-a") is not None


# -- storage and scale


def test_a_file_store_survives_reopening_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    store = History(path)
    store.put_run("r1", "sales", "1.0.0", "SUCCESS", 1.0, 2.0, 3.0)
    store.close()
    store = History(path)
    assert store.run("r1") is not None
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(RecordError, match="newer than this program"):
        History(path)


def test_calls_from_worker_threads_are_serialised(tmp_path: Path) -> None:
    store = History(tmp_path / "h.sqlite")

    async def main() -> None:
        await asyncio.gather(
            *(asyncio.to_thread(store.put_node, **node("r1", f"n{i}")) for i in range(50)),
            *(asyncio.to_thread(store.runs) for _ in range(20)),
        )

    asyncio.run(main())
    store.put_run("r1", "sales", "1.0.0", "SUCCESS", 1.0, 2.0, 3.0)
    run = store.run("r1")
    assert run is not None
    assert len(run["nodes"]) == 50
    store.close()


def test_ten_thousand_node_executions_are_written_in_well_under_a_second(tmp_path: Path) -> None:
    store = History(tmp_path / "h.sqlite")
    store.put_run("big", "sales", "1.0.0", "RUNNING", 1.0)
    rows = [
        node("big", f"n{i}", "done", output={"rows": i, "path": f"part-{i}"}, cpu_s=0.5, log_tail="ok")
        for i in range(10_000)
    ]
    start = time.perf_counter()
    assert store.put_nodes(rows) == 10_000
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"10,000 node executions took {elapsed:.3f} s"
    start = time.perf_counter()
    store.put_nodes(rows)  # the same batch replayed: no change, and no slower
    assert time.perf_counter() - start < 0.5
    run = store.run("big")
    assert run is not None
    assert len(run["nodes"]) == 10_000
    store.close()
