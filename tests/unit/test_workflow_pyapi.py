"""The decorator API builds the same model as the JSON definition, and steps stay plain functions."""

from __future__ import annotations

import pytest

from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.pyapi import Handle, dag, step


@step(outputs={"rows": "INTEGER"}, cpu_cores=1, memory_mb=256, timeout="PT5M", retries=2)
def extract(region: str, limit: int = 10) -> dict[str, int]:
    return {"rows": len(region) * limit}


@step(outputs={"total": "NUMBER"})
def total(rows: int, scale: float = 1.0) -> dict[str, float]:
    return {"total": rows * scale}


@step
def alert(reason: str = "failed", tags: list[str] | None = None) -> dict[str, str]:
    return {"sent": reason}


@dag(dag_id="sales", version="1.0.0", schedule="0 2 * * *", timezone="UTC", retries=3, retry_interval="PT5M")
def sales() -> None:
    e = extract(region="EU")
    total(rows=e["rows"])
    alert.after(e, condition="FAILURE")(reason="extract failed")


def test_steps_are_plain_functions_outside_a_dag() -> None:
    assert extract(region="EU") == {"rows": 20}
    assert total(rows=4, scale=0.5) == {"total": 2.0}
    assert extract.__name__ == "extract"


def test_definition_has_nodes_edges_and_schedule() -> None:
    d = sales.definition(artifact_id="sales-code-1")
    assert [n.node_id for n in d.nodes] == ["extract", "total", "alert"]
    ex = d.node("extract")
    assert ex.task.runtime == "PYTHON"
    assert ex.task.entrypoint == f"{__name__}:extract"
    assert ex.task.artifact_id == "sales-code-1"
    assert ex.task.params == {"region": "EU"}
    assert ex.task.input_schema["region"].type == "STRING" and ex.task.input_schema["region"].required
    assert ex.task.input_schema["limit"].default == 10
    assert ex.task.output_schema is not None and ex.task.output_schema["rows"].type == "INTEGER"
    assert (ex.resources.cpu_cores, ex.resources.memory_mb) == (1, 256)
    assert (ex.execution.timeout_s, ex.execution.max_retries) == (300, 2)
    edges = {(e.source, e.target): e for e in d.edges}
    assert edges["extract", "total"].data_mapping == {"rows": "rows"}
    assert edges["extract", "total"].condition == "SUCCESS"
    assert edges["extract", "alert"].condition == "FAILURE" and not edges["extract", "alert"].data_mapping
    assert d.schedule.type == "CRON" and d.schedule.expression == "0 2 * * *"
    assert d.schedule.retry_policy is not None and d.schedule.retry_policy.retry_interval_s == 300
    assert d.node("alert").task.input_schema["tags"].type == "ANY"
    assert parse_definition(d.to_json()) == d


def test_a_step_used_twice_gets_numbered_ids_and_node_id_can_be_chosen() -> None:
    @dag(dag_id="twice")
    def twice() -> None:
        a = extract(region="EU")
        b = extract(region="US")
        extract.after(node_id="extract-asia")(region="ASIA")
        total(rows=a["rows"])
        total(rows=b["rows"], scale=2.0)

    d = twice.definition()
    assert [n.node_id for n in d.nodes] == ["extract", "extract-2", "extract-asia", "total", "total-2"]
    assert [(e.source, e.target) for e in d.edges] == [("extract", "total"), ("extract-2", "total-2")]
    assert d.node("total-2").task.params == {"scale": 2.0}
    assert d.schedule.type == "MANUAL"


def test_calling_a_step_in_a_body_returns_a_handle() -> None:
    seen: list[object] = []

    @dag(dag_id="h")
    def body() -> None:
        seen.append(extract(region="EU"))

    body.definition()
    assert isinstance(seen[0], Handle) and seen[0].node_id == "extract"


def test_unknown_output_and_whole_handle_are_refused() -> None:
    @dag(dag_id="bad1")
    def bad1() -> None:
        total(rows=extract(region="EU")["rowz"])

    with pytest.raises(DefinitionError, match="has no output 'rowz'"):
        bad1.definition()

    @dag(dag_id="bad2")
    def bad2() -> None:
        total(rows=extract(region="EU"))

    with pytest.raises(DefinitionError, match="pass one output"):
        bad2.definition()


def test_bad_arguments_and_non_json_constants_are_refused() -> None:
    @dag(dag_id="bad3")
    def bad3() -> None:
        extract(regoin="EU")

    with pytest.raises(DefinitionError, match="bad3: extract"):
        bad3.definition()

    @dag(dag_id="bad4")
    def bad4() -> None:
        extract(region={1, 2})

    with pytest.raises(DefinitionError, match="expected a JSON value"):
        bad4.definition()


def test_empty_body_and_after_outside_a_dag_are_refused() -> None:
    @dag(dag_id="empty")
    def empty() -> None:
        pass

    with pytest.raises(DefinitionError, match="called no step"):
        empty.definition()
    with pytest.raises(DefinitionError, match="only meaningful inside"):
        alert.after()()


def test_once_schedule_and_retention() -> None:
    @dag(dag_id="once", start_at="2024-05-01T02:00:00Z", retention_days=7)
    def once() -> None:
        alert()

    d = once.definition()
    assert d.schedule.type == "ONCE" and d.retention_days == 7
    assert d.node("alert").task.params == {}


def test_positional_only_parameters_are_refused() -> None:
    def f(x: int, /) -> dict[str, int]:
        return {}

    with pytest.raises(DefinitionError, match="passed by name"):
        step(f)
