"""Chains, groups, templates, dependencies, timeouts with retries, unschedulable tasks and cancellation,
through real nodes and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def pair(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("wf")
    with running(root, mosquitto_module, ["a", "b"]) as cluster:
        yield cluster


def _file(tmp_path: Path, spec: dict[str, object]) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_chain_passes_results_and_renders_templates(pair: Cluster, tmp_path: Path) -> None:
    spec = {
        "kind": "chain",
        "vars": {"who": "nobody"},
        "tasks": [
            {"id": "greet", "type": "echo", "payload": {"message": "hello {{who}}"}},
            {"id": "count", "type": "python_eval", "payload": {"expression": "len(previous['message'])"}},
            {"id": "double", "type": "python_eval", "payload": {"expression": "previous * 2"}},
        ],
    }
    out = pair.cli("submit", "batch", _file(tmp_path, spec), "--var", "who=world", "--wait")
    assert out.returncode == 0, out.stderr
    tasks = json.loads(out.stdout)["tasks"]
    assert [t["result"] for t in tasks] == [{"message": "hello world"}, 11, 22]


def test_group_waits_for_all(pair: Cluster, tmp_path: Path) -> None:
    spec = {"kind": "group", "tasks": [{"type": "sleep", "payload": {"seconds": 0.3}}] * 4}
    started = time.monotonic()
    out = pair.cli("submit", "batch", _file(tmp_path, spec), "--wait")
    assert out.returncode == 0, out.stderr
    assert [t["state"] for t in json.loads(out.stdout)["tasks"]] == ["done"] * 4
    assert time.monotonic() - started >= 0.3


def test_failed_dependency_fails_its_dependents(pair: Cluster, tmp_path: Path) -> None:
    spec = {
        "kind": "batch",
        "tasks": [
            {"id": "bad", "type": "python_eval", "payload": {"expression": "1 // 0"}},
            {"id": "after-bad", "type": "echo", "after": ["bad"]},
            {"id": "free", "type": "echo", "payload": {"x": 1}},
        ],
    }
    out = pair.cli("submit", "batch", _file(tmp_path, spec), "--wait")
    assert out.returncode == 1
    states = {t["id"].split(".")[-1]: t for t in json.loads(out.stdout)["tasks"]}
    assert states["bad"]["state"] == "failed" and "division" in states["bad"]["error"]
    assert states["after-bad"]["state"] == "failed" and "dependency" in states["after-bad"]["error"]
    assert states["free"]["state"] == "done"


def test_timeout_is_retried_then_fails_with_the_reason(pair: Cluster) -> None:
    out = pair.cli(
        "submit",
        "task",
        "sleep",
        "--payload",
        '{"seconds": 30}',
        "--timeout",
        "0.5",
        "--max-retries",
        "1",
        "--job-id",
        "slow-1",
        "--wait",
    )
    assert out.returncode == 1
    assert "timeout" in out.stderr
    rows = json.loads(pair.cli("tasks", "--json", "--job", "slow-1").stdout)
    assert rows[0]["state"] == "failed" and rows[0]["attempt"] == 2


def test_unschedulable_task_shows_why_then_fails(pair: Cluster) -> None:
    proc_out = pair.cli(
        "submit",
        "task",
        "echo",
        "--require",
        "min_cores=999",
        "--pending-timeout",
        "3",
        "--job-id",
        "huge-1",
        # Without it, the client refuses what no member it hears can run (tests/integration/test_newcomer.py).
        "--wait-for-cluster",
    )
    assert proc_out.returncode == 0, proc_out.stderr
    time.sleep(0.8)
    rows = json.loads(pair.cli("tasks", "--json", "--job", "huge-1").stdout)
    assert rows[0]["state"] == "queued"
    assert rows[0]["reason"] == "no member satisfies min_cores=999 (2 live)"
    deadline = time.monotonic() + 15
    while rows[0]["state"] != "failed":
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)
        rows = json.loads(pair.cli("tasks", "--json", "--job", "huge-1").stdout)
    assert "unschedulable" in rows[0]["reason"] or rows[0]["state"] == "failed"


def test_cancel_a_running_job(pair: Cluster) -> None:
    out = pair.cli("submit", "task", "sleep", "--payload", '{"seconds": 60}', "--job-id", "cancel-me")
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 15
    while True:
        rows = json.loads(pair.cli("tasks", "--json", "--job", "cancel-me").stdout)
        if rows and rows[0]["state"] == "running":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert pair.cli("cancel", "cancel-me").returncode == 0
    time.sleep(0.5)
    rows = json.loads(pair.cli("tasks", "--json", "--job", "cancel-me").stdout)
    assert rows[0]["state"] == "cancelled"
    assert pair.cli("cancel", "no-such-id").returncode == 1


def test_resubmitting_a_finished_job_returns_its_result_without_running_it_again(pair: Cluster) -> None:
    args = (
        "submit",
        "task",
        "python_eval",
        "--payload",
        '{"expression": "6 * 7"}',
        "--job-id",
        "once-1",
        "--wait",
    )
    first = pair.cli(*args)
    assert first.returncode == 0 and json.loads(first.stdout) == 42, first.stderr
    again = pair.cli(*args, timeout=30)
    assert again.returncode == 0 and json.loads(again.stdout) == 42, again.stderr
    rows = [r for r in json.loads(pair.cli("tasks", "--json").stdout) if r["job"] == "once-1"]
    assert [(r["state"], r["attempt"]) for r in rows] == [("done", 1)]
