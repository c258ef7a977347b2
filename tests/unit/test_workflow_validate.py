"""The contract check: shape, data flow, conditions, cluster fit, SLA, suggestions; and task standards."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_workflow_model import big_definition, seed_definition

from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.fields import DefinitionError
from swarm.workflow.standards import Sla, TaskStandard, apply_standard, parse_standard
from swarm.workflow.validate import ClusterView, MemberView, NodeHistory, type_fits, validate

PY_AND_JVM = frozenset({"PYTHON", "JVM"})


def member(
    name: str = "m1", cores: int = 32, memory_mb: int = 131072, gpu: bool = True, slots: int = 64
) -> MemberView:
    return MemberView(name, name, cores, memory_mb, 500.0, gpu, PY_AND_JVM, {}, slots)


BIG = ClusterView((member(),))


def node(
    node_id: str, inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    task: dict[str, Any] = {"runtime": "PYTHON", "entrypoint": f"m:{node_id.replace('-', '_')}"}
    if inputs is not None:
        task["inputSchema"] = inputs
    if outputs is not None:
        task["outputSchema"] = outputs
    return {"nodeId": node_id, "taskDefinition": task, **extra}


def dag(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dagId": "t", "version": "1.0", "nodes": nodes, "edges": edges}


def messages(issues: list[Any]) -> list[str]:
    return [issue.message for issue in issues]


def check(data: dict[str, Any], cluster: ClusterView = BIG, **kwargs: Any) -> Any:
    return validate(parse_definition(data), kwargs.pop("standards", {}), cluster, **kwargs)


# --- the seed ----------------------------------------------------------------------------------------------


def test_seed_dag_is_valid_on_a_big_cluster_with_the_seed_style_suggestion() -> None:
    result = check(seed_definition())
    assert result.is_valid, result.errors
    assert result.to_json()["isValid"] is True
    split = [s for s in result.suggestions if s.action == "SPLIT_BY_KEY"]
    assert [s.node_id for s in split] == ["analyze-sales"]
    # The root's required dateRange comes from the run's parameters.
    assert "required input dateRange must be given as a run parameter" in messages(result.warnings)
    infos = [w for w in result.warnings if w.severity == "INFO"]
    assert any(w.node_id == "extract-sales-data" and "networkBandwidth" in w.message for w in infos)


def test_result_json_has_the_seed_shape() -> None:
    shape = check(seed_definition()).to_json()
    assert set(shape) == {"isValid", "errors", "warnings", "suggestions"}
    assert set(shape["warnings"][0]) == {"nodeId", "message", "severity"}
    assert set(shape["suggestions"][0]) == {"nodeId", "message", "action"}


def test_small_cluster_gets_resource_runtime_gpu_and_parallelism_findings() -> None:
    small = ClusterView((MemberView("m1", "m1", 8, 16384, 100.0, False, frozenset({"PYTHON"}), {}, 4),))
    result = check(seed_definition(), small)
    assert not result.is_valid
    assert "runtime JVM: no member offers it (members offer PYTHON, SWARM)" in messages(result.errors)
    analyze = [w.message for w in result.warnings if w.node_id == "analyze-sales" and w.severity == "WARNING"]
    assert any("needs 16 cores; the largest member has 8" in m for m in analyze)
    assert any(w.node_id == "transform-sales" and "no member has a GPU" in w.message for w in result.warnings)
    lower = [s for s in result.suggestions if s.action == "LOWER_PARALLELISM"]
    assert [s.node_id for s in lower] == ["transform-sales"]


def test_empty_cluster_gives_one_warning_and_no_runtime_errors() -> None:
    result = check(seed_definition(), ClusterView())
    assert result.is_valid
    empty = [w for w in result.warnings if "no live members" in w.message]
    assert len(empty) == 1 and "JVM" in empty[0].message
    assert not any("largest member" in w.message for w in result.warnings)


def test_no_single_member_with_everything_together() -> None:
    cluster = ClusterView((member("cpu", cores=32, memory_mb=1024), member("mem", cores=2, memory_mb=131072)))
    data = dag([node("a", resourceRequirements={"cpuCores": 16, "memoryMB": 65536})], [])
    assert any("no single member has 16 cores" in w.message for w in check(data, cluster).warnings)


# --- shape -------------------------------------------------------------------------------------------------


def test_cycle_and_unreachable_nodes_are_errors() -> None:
    data = dag([node("r"), node("a"), node("b"), node("c")], [{"from": "r", "to": "c"}])
    data["edges"] += [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]
    result = check(data)
    assert not result.is_valid
    assert any("edges form a cycle: " in m for m in messages(result.errors))
    unreachable = {i.node_id for i in result.errors if "not reachable" in i.message}
    assert unreachable == {"a", "b"}


def test_no_root_at_all_is_reported() -> None:
    data = dag([node("a"), node("b")], [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}])
    assert any("no root node" in m for m in messages(check(data).errors))


def test_disconnected_parts_are_warnings() -> None:
    data = dag([node("a"), node("b"), node("c")], [{"from": "a", "to": "b"}])
    result = check(data)
    assert result.is_valid
    lonely = [w for w in result.warnings if "not connected" in w.message]
    assert [w.node_id for w in lonely] == ["c"]


# --- data flow ---------------------------------------------------------------------------------------------


def test_required_input_of_a_non_root_must_be_mapped() -> None:
    data = dag(
        [
            node("a", outputs={"path": {"type": "STRING"}}),
            node("b", inputs={"src": {"type": "STRING", "required": True}}),
        ],
        [{"from": "a", "to": "b"}],
    )
    assert "required input src is not mapped from any parent and has no default or param" in messages(
        check(data).errors
    )
    mapped = copy.deepcopy(data)
    mapped["edges"][0]["dataMapping"] = {"src": "path"}
    assert check(mapped).is_valid
    by_param = copy.deepcopy(data)
    by_param["nodes"][1]["taskDefinition"]["params"] = {"src": "/data"}
    assert check(by_param).is_valid


def test_mapping_from_an_undeclared_output_is_an_error() -> None:
    data = dag(
        [node("a", outputs={"path": {"type": "STRING"}}), node("b", inputs={"src": {"type": "STRING"}})],
        [{"from": "a", "to": "b", "dataMapping": {"src": "paht"}}],
    )
    assert "edge a -> b: a has no output paht (it declares path)" in messages(check(data).errors)


def test_mapping_from_a_parent_without_output_schema_is_trusted() -> None:
    data = dag([node("a"), node("b", inputs={"src": {"type": "STRING", "required": True}})], [])
    data["edges"] = [{"from": "a", "to": "b", "dataMapping": {"src": "anything"}}]
    assert check(data).is_valid


def test_type_mismatch_and_unknown_types() -> None:
    data = dag(
        [
            node("a", outputs={"n": {"type": "STRING"}, "w": {"type": "WIDGET"}}),
            node("b", inputs={"n": {"type": "INTEGER"}, "w": {"type": "WIDGET"}}),
        ],
        [{"from": "a", "to": "b", "dataMapping": {"n": "n", "w": "w"}}],
    )
    result = check(data)
    assert "edge a -> b: output n is STRING, but input n takes INTEGER" in messages(result.errors)
    assert any("unknown type WIDGET" in m for m in messages(result.warnings))
    assert len(result.errors) == 1


@pytest.mark.parametrize(
    ("out", "into", "fits"),
    [
        ("INTEGER", "NUMBER", True),
        ("NUMBER", "INTEGER", False),
        ("STRING", "OBJECT", True),
        ("ARRAY<integer>", "ARRAY<number>", True),
        ("ARRAY<number>", "ARRAY<integer>", False),
        ("ARRAY<string>", "ANY", True),
        ("MAP<string, integer>", "MAP<string, number>", True),
        ("ARRAY<object>", "ARRAY<string>", False),
        ("DATE_RANGE", "DATE_RANGE", True),
    ],
)
def test_type_fits(out: str, into: str, fits: bool) -> None:
    assert type_fits(out, into)[0] is fits


def test_unknown_type_fits_only_itself() -> None:
    assert type_fits("WIDGET", "WIDGET") == (True, frozenset({"WIDGET"}))
    assert type_fits("WIDGET", "GADGET")[0] is False


def test_input_mapped_twice_and_undeclared_input() -> None:
    data = dag(
        [
            node("a", outputs={"x": {"type": "STRING"}}),
            node("b", outputs={"x": {"type": "STRING"}}),
            node("c", inputs={"x": {"type": "STRING"}}),
        ],
        [
            {"from": "a", "to": "c", "dataMapping": {"x": "x"}},
            {"from": "b", "to": "c", "dataMapping": {"x": "x", "y": "x"}},
        ],
    )
    errors = messages(check(data).errors)
    assert "edge b -> c: input x is already mapped by the edge from a" in errors
    assert "edge b -> c: maps input y, which c does not declare" in errors


# --- conditions --------------------------------------------------------------------------------------------


def test_bad_condition_and_condition_type_errors() -> None:
    outputs = {"rowCount": {"type": "INTEGER"}, "region": {"type": "STRING"}}
    data = dag([node("a", outputs=outputs), node("b"), node("c")], [])
    data["edges"] = [
        {"from": "a", "to": "b", "condition": "SUCCESS AND output.rowCount >"},
        {"from": "a", "to": "c", "condition": "output.region > 3"},
    ]
    result = check(data)
    assert [i.node_id for i in result.errors] == ["b", "c"]
    assert "condition 'SUCCESS AND output.rowCount >'" in result.errors[0].message
    good = copy.deepcopy(data)
    good["edges"] = [
        {"from": "a", "to": "b", "condition": "FAILURE"},
        {"from": "a", "to": "c", "condition": "output.rowCount > 100"},
    ]
    assert check(good).is_valid


# --- standards and history ---------------------------------------------------------------------------------

STANDARD = {
    "name": "etl-extract",
    "version": "1.0",
    "category": "ETL",
    "description": "extract",
    "inputSchema": {"day": {"type": "STRING", "required": True}},
    "outputSchema": {"path": {"type": "STRING"}},
    "resourceCeiling": {"cpuCores": 4, "memoryMB": 8192},
    "sla": {"maxDuration": "PT30M", "minSuccessRate": 0.95},
}


def test_standard_round_trip_and_bad_fields() -> None:
    standard = parse_standard(STANDARD)
    assert standard.key == "etl-extract@1.0"
    assert standard.sla == Sla(1800, 0.95)
    assert parse_standard(standard.to_json()) == standard
    with pytest.raises(DefinitionError, match=r"sla\.minSuccessRate"):
        parse_standard({**STANDARD, "sla": {"minSuccessRate": 1.5}})
    with pytest.raises(DefinitionError, match="category"):
        parse_standard({**STANDARD, "category": "FUN"})
    with pytest.raises(DefinitionError, match="unknown field"):
        parse_standard({**STANDARD, "owner": "me"})


def test_apply_standard_inherits_schemas_and_caps_resources() -> None:
    standard = parse_standard(STANDARD)
    data = dag([node("a", resourceRequirements={"cpuCores": 8, "memoryMB": 1024})], [])
    data["nodes"][0]["taskDefinition"]["standard"] = "etl-extract@1.0"
    applied, problems = apply_standard(parse_definition(data).nodes[0], standard)
    assert set(applied.task.input_schema) == {"day"}
    assert applied.task.output_schema is not None and set(applied.task.output_schema) == {"path"}
    assert applied.resources.cpu_cores == 4 and applied.resources.memory_mb == 1024
    assert applied.execution.timeout_s == 1800
    assert problems == ["cpuCores 8 is above the ceiling of 4 set by the standard etl-extract@1.0"]


def test_apply_standard_reports_conflicting_and_extra_required_fields() -> None:
    standard = parse_standard(STANDARD)
    data = dag(
        [node("a", inputs={"day": {"type": "INTEGER"}, "extra": {"type": "STRING", "required": True}})], []
    )
    _, problems = apply_standard(parse_definition(data).nodes[0], standard)
    assert any("input day: the node declares INTEGER" in p for p in problems)
    assert any("input extra is required by the node but is not part of" in p for p in problems)


def test_standards_in_validation_with_history() -> None:
    standards = {"etl-extract@1.0": parse_standard(STANDARD)}
    data = dag(
        [
            node("a", executionConfig={"timeout": "PT10M"}),
            node("b", inputs={"p": {"type": "STRING", "required": True}}),
        ],
        [{"from": "a", "to": "b", "dataMapping": {"p": "path"}}],
    )
    data["nodes"][0]["taskDefinition"]["standard"] = "etl-extract@1.0"
    history = {"a": NodeHistory(runs=20, success_rate=0.9, mean_duration_s=900, p95_duration_s=2400)}
    result = check(data, standards=standards, history=history)
    assert result.is_valid, result.errors  # b's input p is fed by the standard's output path
    found = " | ".join(w.message for w in result.warnings if w.node_id == "a")
    assert "p95 duration PT40M over 20 runs exceeds the SLA maximum PT30M" in found
    assert "success rate 90.0% over 20 runs is below the SLA minimum 95.0%" in found
    assert "timeout PT10M is shorter than the SLA maximum PT30M" in found
    assert "timeout PT10M is shorter than the p95 duration PT40M" in found


def test_undefined_standard_is_an_error() -> None:
    data = dag([node("a")], [])
    data["nodes"][0]["taskDefinition"]["standard"] = "nope@1.0"
    assert messages(check(data).errors) == ["standard nope@1.0 is not defined"]


def test_task_standard_is_constructible_directly() -> None:
    assert TaskStandard("s", "1.0", "ML").key == "s@1.0"


# --- scale -------------------------------------------------------------------------------------------------


def test_ten_thousand_nodes_validate() -> None:
    cluster = ClusterView(tuple(member(f"m{i}", cores=4 + i % 8, gpu=False) for i in range(100)))
    result = validate(parse_definition(big_definition(10_000)), {}, cluster)
    assert result.is_valid and not result.warnings
