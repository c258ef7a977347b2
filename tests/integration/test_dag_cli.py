"""`swarm artifact` and `swarm dag` against two real nodes, the API found through the broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network

STEPS = """
def extract(n):
    return {"rows": list(range(n))}

def total(rows):
    return {"sum": sum(rows), "count": len(rows)}
"""

DAG_YAML = """
dagId: cli-sums
name: Sums from the CLI
version: "1.0.0"
schedule:
  type: MANUAL
nodes:
  - nodeId: extract
    type: EXTRACT
    taskDefinition:
      artifactId: cli-steps-v1.0
      entrypoint: "steps:extract"
      runtime: PYTHON
      inputSchema: {n: {type: INTEGER, required: true}}
      outputSchema: {rows: {type: "ARRAY<number>"}}
  - nodeId: total
    type: ANALYZE
    taskDefinition:
      artifactId: cli-steps-v1.0
      entrypoint: "steps:total"
      runtime: PYTHON
      inputSchema: {rows: {type: "ARRAY<number>", required: true}}
      outputSchema: {sum: {type: NUMBER}, count: {type: INTEGER}}
edges:
  - {from: extract, to: total, dataMapping: {rows: rows}}
"""


@pytest.fixture(scope="module")
def duo(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("dagcli")
    with running(root, mosquitto_module, ["a", "b"]) as cluster:  # type: ignore[arg-type]
        yield cluster


def test_push_define_and_run_with_the_cli(duo: Cluster, tmp_path: Path) -> None:
    steps = tmp_path / "steps.py"
    steps.write_text(STEPS)
    out = duo.cli("artifact", "push", str(steps), "--name", "cli-steps", "--version", "1.0", timeout=30)
    assert out.returncode == 0, out.stderr
    assert "cli-steps-v1.0" in out.stdout

    dag = tmp_path / "dag.yaml"
    dag.write_text(DAG_YAML)
    out = duo.cli("dag", "define", str(dag), timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cli-sums 1.0.0: CREATED" in out.stdout
    assert "critical path:  extract -> total" in out.stdout

    out = duo.cli(
        "dag", "run", "cli-sums", "--param", "n=5", "--run-id", "cli-sums-run-1", "--wait", timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run = json.loads(out.stdout)
    assert run["runId"] == "cli-sums-run-1" and run["state"] == "SUCCESS"
    steps_by_id = {n["nodeId"]: n for n in run["nodes"]}
    assert steps_by_id["total"]["output"] == {"sum": 10, "count": 5}
    assert "run cli-sums-run-1 SUCCESS" in out.stderr and "total#0 SUCCESS" in out.stderr

    out = duo.cli("dag", "status", "cli-sums-run-1", timeout=30)
    assert out.returncode == 0 and "SUCCESS" in out.stdout and "extract" in out.stdout, out.stderr
    out = duo.cli("dag", "runs", "cli-sums", "--json", timeout=30)
    assert out.returncode == 0 and [r["runId"] for r in json.loads(out.stdout)] == ["cli-sums-run-1"]


def test_bad_files_and_unknown_dags_are_one_line_errors(duo: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    last = "count: {type: INTEGER}}\n"
    bad.write_text(DAG_YAML.replace(last, last + "    executionConfig: {timeout: soon}\n"))
    out = duo.cli("dag", "define", str(bad), timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "nodes[1].executionConfig.timeout" in out.stderr and "Traceback" not in out.stderr

    out = duo.cli("dag", "run", "no-such-dag", "--wait", timeout=30)
    assert out.returncode == 1 and out.stdout == ""
    assert "no DAG 'no-such-dag'" in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
