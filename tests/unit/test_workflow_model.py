"""The DAG definition model: durations, strict parsing, not-applied fields, round trips, graph helpers."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import InvalidSpec
from swarm.workflow.definition_parser import MAX_DEFINITION_BYTES, load_definition, parse_definition
from swarm.workflow.durations import format_duration
from swarm.workflow.fields import DefinitionError, parse_duration
from swarm.workflow.model import DagDefinition, runtime_family


def seed_definition() -> dict[str, Any]:
    """The seed's POST /api/v1/dag/define body, without its // comments."""
    return {
        "dagId": "sales-analytics-pipeline-v3",
        "name": "销售数据分析管道",
        "description": "每日销售数据ETL与多维分析",
        "version": "3.2.1",
        "schedule": {
            "type": "CRON",
            "expression": "0 2 * * *",
            "timezone": "Asia/Shanghai",
            "retryPolicy": {"maxRetries": 3, "retryInterval": "PT5M", "backoffMultiplier": 1.5},
        },
        "nodes": [
            {
                "nodeId": "extract-sales-data",
                "name": "销售数据提取",
                "type": "EXTRACT",
                "position": {"x": 100, "y": 150, "z": 0},
                "taskDefinition": {
                    "artifactId": "sales-extractor-v2.1",
                    "className": "com.enterprise.tasks.sales.SalesDataExtractor",
                    "runtime": "JAVA_17",
                    "inputSchema": {
                        "dateRange": {"type": "DATE_RANGE", "required": True},
                        "regions": {"type": "ARRAY<string>", "default": ["ALL"]},
                    },
                    "outputSchema": {"rawDataPath": {"type": "STRING", "description": "原始数据HDFS路径"}},
                },
                "resourceRequirements": {
                    "cpuCores": 2,
                    "memoryMB": 4096,
                    "diskGB": 50,
                    "networkBandwidth": "HIGH",
                },
                "executionConfig": {
                    "timeout": "PT30M",
                    "parallelism": 4,
                    "isMapStage": True,
                    "partitionStrategy": "REGION_HASH",
                },
            },
            {
                "nodeId": "transform-sales",
                "name": "销售数据转换",
                "type": "TRANSFORM",
                "position": {"x": 300, "y": 150, "z": 0},
                "taskDefinition": {
                    "artifactId": "sales-transformer-v1.8",
                    "className": "com.enterprise.tasks.sales.SalesDataTransformer",
                    "runtime": "PYTHON_3.9",
                    "inputSchema": {"rawDataPath": {"type": "STRING", "required": True}},
                    "outputSchema": {
                        "cleanDataPath": {"type": "STRING", "description": "清洗后数据路径"},
                        "metrics": {"type": "MAP<string, number>"},
                    },
                },
                "resourceRequirements": {"cpuCores": 8, "memoryMB": 16384, "gpuUnits": 1, "diskGB": 100},
                "executionConfig": {
                    "timeout": "PT1H",
                    "parallelism": 16,
                    "isMapStage": True,
                    "partitionStrategy": "PRODUCT_CATEGORY_HASH",
                },
            },
            {
                "nodeId": "analyze-sales",
                "name": "销售分析汇总",
                "type": "ANALYZE",
                "position": {"x": 500, "y": 150, "z": 0},
                "taskDefinition": {
                    "artifactId": "sales-analyzer-v2.4",
                    "className": "com.enterprise.tasks.sales.SalesAnalyzer",
                    "runtime": "SCALA_2.12",
                    "inputSchema": {
                        "cleanDataPath": {"type": "STRING", "required": True},
                        "analysisTypes": {"type": "ARRAY<string>", "default": ["DAILY", "WEEKLY", "MONTHLY"]},
                    },
                    "outputSchema": {
                        "analysisResults": {"type": "ARRAY<object>", "description": "分析结果集合"},
                        "visualizationData": {"type": "OBJECT"},
                    },
                },
                "resourceRequirements": {"cpuCores": 16, "memoryMB": 65536, "diskGB": 200},
                "executionConfig": {
                    "timeout": "PT2H",
                    "parallelism": 1,
                    "isReduceStage": True,
                    "memoryIntensive": True,
                },
            },
        ],
        "edges": [
            {
                "from": "extract-sales-data",
                "to": "transform-sales",
                "dataMapping": {"rawDataPath": "rawDataPath"},
                "condition": "SUCCESS",
            },
            {
                "from": "transform-sales",
                "to": "analyze-sales",
                "dataMapping": {"cleanDataPath": "cleanDataPath"},
                "condition": "SUCCESS",
            },
        ],
        "globalConfigs": {
            "defaultResourcePool": "high-priority-pool",
            "dataRetentionPolicy": "KEEP_30_DAYS",
            "notificationChannels": ["EMAIL", "SMS", "SLACK"],
            "observabilityLevel": "DETAILED",
        },
        "mapReduceConfig": {
            "enabled": True,
            "mapParallelismDefault": 16,
            "reduceParallelismDefault": 4,
            "shuffleStrategy": "SORT_BASED",
            "compressionEnabled": True,
            "spillThresholdMB": 1024,
        },
    }


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "dagId": "d",
        "version": "1.0",
        "nodes": [{"nodeId": "a", "taskDefinition": {"runtime": "SHELL"}}],
    } | extra


def error_of(data: object) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data)
    return info.value


# --- durations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT30M", 1800), ("PT5M", 300), ("P1DT2H", 93600), ("PT0.5S", 0.5), ("P2W", 1209600), ("PT1.5H", 5400)],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


def test_durations_format_shortest() -> None:
    assert format_duration(9900) == "PT2H45M"
    assert format_duration(0) == "PT0S"
    assert format_duration(90000) == "P1DT1H"
    assert format_duration(0.5) == "PT0.5S"


@pytest.mark.parametrize("text", ["P1Y", "P3M", "P1Y2DT3H"])
def test_years_and_months_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(DefinitionError, match="length in seconds is not fixed") as info:
        parse_duration(text, "nodes[2].executionConfig.timeout")
    assert info.value.path == "nodes[2].executionConfig.timeout"


@pytest.mark.parametrize("text", ["soon", "P", "PT", "P1DT", "-PT1S", "PT1.5H30M", "pt5m", "PT5M "])
def test_bad_durations_name_the_path(text: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_duration(text, "schedule.retryPolicy.retryInterval")
    assert str(info.value).startswith("schedule.retryPolicy.retryInterval: ")
    assert isinstance(info.value, InvalidSpec)


@given(st.integers(0, 10**15).map(lambda n: n / 10**6) | st.integers(0, 10**9))
def test_format_then_parse_is_exact(seconds: float) -> None:
    assert parse_duration(format_duration(seconds), "x") == seconds


@given(st.decimals(min_value=0, max_value=10**6, places=9), st.sampled_from(["", "PT1H", "P2DT3M"]))
def test_parse_then_format_then_parse_is_stable(seconds: object, prefix: str) -> None:
    text = (prefix or "PT") + f"{seconds:f}S"
    once = parse_duration(text, "x")
    assert parse_duration(format_duration(once), "x") == once


def test_more_than_nanosecond_precision_is_refused() -> None:
    with pytest.raises(DefinitionError, match="at most 9 digits"):
        parse_duration("PT0.0000000001S", "x")


# --- the seed's definition --------------------------------------------------------------------------------


def test_seed_definition_parses_with_its_values() -> None:
    d = parse_definition(seed_definition())
    assert d.dag_id == "sales-analytics-pipeline-v3"
    assert d.schedule.retry_policy is not None
    assert d.schedule.retry_policy.retry_interval_s == 300
    assert d.schedule.retry_policy.backoff_multiplier == 1.5
    assert d.node("transform-sales").resources.gpu_units == 1
    assert d.node("analyze-sales").execution.timeout_s == 7200
    assert d.node("extract-sales-data").task.input_schema["regions"].default == ["ALL"]
    assert d.node("extract-sales-data").task.family == "JVM"
    assert d.topological_order() == ("extract-sales-data", "transform-sales", "analyze-sales")
    assert [e.target for e in d.children("extract-sales-data")] == ["transform-sales"]
    assert d.parents("transform-sales")[0].data_mapping == {"rawDataPath": "rawDataPath"}
    assert d.retention_days == 30


def test_seed_fields_that_mean_nothing_here_are_reported_not_dropped() -> None:
    d = parse_definition(seed_definition())
    paths = {note.path for note in d.not_applied}
    assert {
        "globalConfigs.defaultResourcePool",
        "globalConfigs.notificationChannels",
        "nodes[0].resourceRequirements.networkBandwidth",
        "mapReduceConfig.spillThresholdMB",
    } <= paths
    # Partitioning of map stages in an enabled MapReduce config is applied, so it is not listed.
    assert not any("partitionStrategy" in path for path in paths)


def test_partition_strategy_outside_mapreduce_is_not_applied() -> None:
    data = minimal()
    data["nodes"][0]["executionConfig"] = {"partitionStrategy": "REGION_HASH"}
    assert [n.path for n in parse_definition(data).not_applied] == [
        "nodes[0].executionConfig.partitionStrategy"
    ]


def test_container_image_is_accepted_as_not_applied_and_kept() -> None:
    data = minimal()
    data["nodes"][0]["taskDefinition"]["containerImage"] = "enterprise/java-runtime:17-slim"
    d = parse_definition(data)
    assert d.not_applied[0].path == "nodes[0].taskDefinition.containerImage"
    assert d.to_json()["nodes"][0]["taskDefinition"]["containerImage"] == "enterprise/java-runtime:17-slim"


def test_seed_text_with_comments_is_refused_as_json_and_accepted_without() -> None:
    text = orjson.dumps(seed_definition(), option=orjson.OPT_INDENT_2).decode()
    commented = text.replace('"expression": "0 2 * * *",', '"expression": "0 2 * * *", // 每天凌晨2点')
    with pytest.raises(DefinitionError, match="JSON has no comments"):
        load_definition(commented, "json")
    assert load_definition(text, "json") == parse_definition(seed_definition())


def test_yaml_gives_the_same_definition() -> None:
    assert load_definition(yaml.safe_dump(seed_definition()), "yaml") == parse_definition(seed_definition())


def test_yaml_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(DefinitionError, match="aliases expand"):
        load_definition("\n".join(lines), "yaml")


def test_oversized_text_is_refused() -> None:
    with pytest.raises(DefinitionError, match="bytes is more than"):
        load_definition(" " * (MAX_DEFINITION_BYTES + 1), "json")


def test_round_trip_of_the_seed() -> None:
    d = parse_definition(seed_definition())
    assert parse_definition(d.to_json()) == d
    assert parse_definition(orjson.loads(orjson.dumps(d.to_json()))) == d


# --- strictness -------------------------------------------------------------------------------------------


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    data = seed_definition()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "where", "says"),
    [
        (["dagId"], KeyError, "dagId", "required"),
        (["dagId"], "bad/id", "dagId", "not a valid id"),
        (["version"], "v3", "version", "MAJOR.MINOR"),
        (["nodes", 1, "nodeId"], KeyError, "nodes[1].nodeId", "required"),
        (["nodes", 1, "nodeId"], "extract-sales-data", "nodes[1].nodeId", "also nodes[0]"),
        (["nodes", 2, "taskDefinition", "runtime"], KeyError, "nodes[2].taskDefinition.runtime", "required"),
        (
            ["nodes", 2, "taskDefinition", "runtime"],
            "COBOL",
            "nodes[2].taskDefinition.runtime",
            "unknown runtime",
        ),
        (["nodes", 0, "executionConfig", "timeout"], "soon", "nodes[0].executionConfig.timeout", "ISO-8601"),
        (["nodes", 0, "executionConfig", "parallelism"], 0, "nodes[0].executionConfig.parallelism", ">= 1"),
        (
            ["nodes", 0, "executionConfig", "parallelism"],
            "4",
            "nodes[0].executionConfig.parallelism",
            "integer",
        ),
        (
            ["nodes", 0, "resourceRequirements", "memoryMB"],
            -1,
            "nodes[0].resourceRequirements.memoryMB",
            ">= 0",
        ),
        (
            ["nodes", 0, "resourceRequirements", "cpuCores"],
            True,
            "nodes[0].resourceRequirements.cpuCores",
            "number",
        ),
        (
            ["nodes", 0, "resourceRequirements", "ramGB"],
            4,
            "nodes[0].resourceRequirements.ramGB",
            "unknown field",
        ),
        (["nodes", 0, "colour"], "red", "nodes[0].colour", "unknown field"),
        (["edges", 1, "to"], "nowhere", "edges[1].to", "no node has the id"),
        (["edges", 0, "dataMapping"], {"x": 3}, "edges[0].dataMapping.x", "output name"),
        (["schedule", "type"], "HOURLY", "schedule.type", "one of CRON"),
        (["schedule", "expression"], KeyError, "schedule.expression", "required for a CRON"),
        (["globalConfigs", "dataRetentionPolicy"], "FOREVER", "globalConfigs.dataRetentionPolicy", "KEEP_"),
        (["nodes"], [], "nodes", "non-empty array"),
        (["nodes", 0, "priority"], "asap", "nodes[0].priority", "one of urgent"),
        (
            ["nodes", 0, "taskDefinition", "inputSchema", "dateRange", "type"],
            "",
            "dateRange.type",
            "non-empty",
        ),
    ],
)
def test_bad_fields_are_refused_naming_the_path(path: list[Any], value: Any, where: str, says: str) -> None:
    exc = error_of(_with(path, value))
    assert exc.path.endswith(where)
    assert says in exc.message
    assert str(exc) == f"{exc.path}: {exc.message}"


def test_non_object_and_duplicate_edges_are_refused() -> None:
    assert error_of([1, 2]).path == "definition"
    data = seed_definition()
    data["edges"].append(copy.deepcopy(data["edges"][0]))
    assert "a second edge" in error_of(data).message


def test_once_needs_a_start_time_with_an_offset() -> None:
    assert error_of(minimal(schedule={"type": "ONCE"})).path == "schedule.startAt"
    assert "offset" in error_of(minimal(schedule={"type": "ONCE", "startAt": "2024-05-01T02:00:00"})).message
    d = parse_definition(
        minimal(schedule={"type": "ONCE", "startAt": "2024-05-01T02:00:00Z", "catchup": "NONE"})
    )
    assert (d.schedule.type, d.schedule.catchup) == ("ONCE", "NONE")


@pytest.mark.parametrize(
    ("runtime", "family"),
    [
        *[
            ("PYTHON_3.9", "PYTHON"),
            ("PYTHON3", "PYTHON"),
            ("python", "PYTHON"),
            ("BASH", "SHELL"),
            ("SH", "SHELL"),
        ],
        *[
            ("JAVA_17", "JVM"),
            ("SCALA_2.12", "JVM"),
            ("KOTLIN", "JVM"),
            ("MAPREDUCE", "MAPREDUCE"),
            ("SWARM", "SWARM"),
        ],
    ],
)
def test_runtime_families(runtime: str, family: str) -> None:
    assert runtime_family(runtime) == family


def test_unknown_runtime_and_swarm_without_entrypoint_are_refused() -> None:
    with pytest.raises(DefinitionError, match="unknown runtime"):
        runtime_family("PERL_5")
    data = minimal()
    data["nodes"][0]["taskDefinition"] = {"runtime": "SWARM"}
    assert error_of(data).path == "nodes[0].taskDefinition.entrypoint"


def test_map_reduce_defaults_fill_unset_parallelism() -> None:
    data = minimal(mapReduceConfig={"enabled": True, "mapParallelismDefault": 8})
    data["nodes"][0]["executionConfig"] = {"isMapStage": True}
    assert parse_definition(data).nodes[0].execution.parallelism == 8


# --- graph helpers ----------------------------------------------------------------------------------------


def chain(*pairs: tuple[str, str]) -> dict[str, Any]:
    ids = sorted({x for pair in pairs for x in pair})
    nodes = [{"nodeId": i, "taskDefinition": {"runtime": "SHELL"}} for i in ids]
    return {"dagId": "g", "version": "1.0", "nodes": nodes, "edges": [{"from": a, "to": b} for a, b in pairs]}


def test_topological_order_keeps_definition_order_among_ready_nodes() -> None:
    d = parse_definition(chain(("a", "c"), ("b", "c"), ("c", "d"), ("a", "d")))
    assert d.topological_order() == ("a", "b", "c", "d")


def test_cycle_is_named() -> None:
    d = parse_definition(chain(("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")))
    with pytest.raises(DefinitionError) as info:
        d.topological_order()
    cycle = re.search(r"cycle: (.*)", info.value.message)
    assert cycle is not None
    names = cycle[1].split(" -> ")
    assert names[0] == names[-1] and set(names) == {"a", "b", "c"}


def test_self_loop_is_a_cycle() -> None:
    with pytest.raises(DefinitionError, match="cycle: a -> a"):
        parse_definition(chain(("a", "a"))).topological_order()


def big_definition(n: int) -> dict[str, Any]:
    nodes = [
        {
            "nodeId": f"n{i}",
            "taskDefinition": {
                "runtime": "PYTHON",
                "entrypoint": "m:f",
                "inputSchema": {"x": {"type": "INTEGER"}},
                "outputSchema": {"x": {"type": "INTEGER"}},
            },
            "resourceRequirements": {"cpuCores": 1 + i % 4, "memoryMB": 256},
            "executionConfig": {"timeout": "PT5M", "parallelism": 1},
        }
        for i in range(n)
    ]
    edges = [{"from": f"n{i // 2}", "to": f"n{i}", "dataMapping": {"x": "x"}} for i in range(1, n)]
    edges += [{"from": f"n{i - 1}", "to": f"n{i}"} for i in range(3, n) if i - 1 != i // 2]
    return {"dagId": "big", "version": "1.0", "nodes": nodes, "edges": edges}


def test_a_ten_thousand_node_definition_parses_and_orders() -> None:
    d = parse_definition(big_definition(10_000))
    assert len(d.nodes) == 10_000 and len(d.edges) > 19_000
    order = d.topological_order()
    position = {node_id: i for i, node_id in enumerate(order)}
    assert all(position[e.source] < position[e.target] for e in d.edges)


# --- round trips of generated definitions ------------------------------------------------------------------

_ids = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_types = st.sampled_from(["STRING", "INTEGER", "NUMBER", "ARRAY<string>", "MAP<string, number>", "OBJECT"])
_schema = st.dictionaries(
    st.from_regex(r"[a-z][a-zA-Z0-9]{0,6}", fullmatch=True),
    st.builds(lambda t, r: {"type": t, "required": r} if r else {"type": t}, _types, st.booleans()),
    max_size=3,
)


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(_ids, min_size=1, max_size=6, unique=True))
    nodes = []
    for node_id in ids:
        task: dict[str, Any] = {"runtime": draw(st.sampled_from(["PYTHON_3.11", "BASH", "JAVA_17"]))}
        task["inputSchema"] = draw(_schema)
        if draw(st.booleans()):
            task["outputSchema"] = draw(_schema)
        node: dict[str, Any] = {"nodeId": node_id, "taskDefinition": task}
        node["resourceRequirements"] = {
            "cpuCores": draw(st.integers(0, 64) | st.floats(0, 64)),
            "memoryMB": draw(st.integers(0, 10**6)),
        }
        node["executionConfig"] = {
            "timeout": format_duration(draw(st.integers(1, 10**6))),
            "parallelism": draw(st.integers(1, 64)),
        }
        node["priority"] = draw(st.sampled_from(["urgent", "normal", "background"]))
        nodes.append(node)
    edges = [
        {"from": ids[i], "to": ids[j], "condition": draw(st.sampled_from(["SUCCESS", "ALWAYS"]))}
        for i in range(len(ids))
        for j in range(i + 1, len(ids))
        if draw(st.booleans())
    ]
    return {"dagId": draw(_ids), "version": "1.2.3", "nodes": nodes, "edges": edges}


@settings(max_examples=60, deadline=None)
@given(definitions())
def test_generated_definitions_round_trip(data: dict[str, Any]) -> None:
    d = parse_definition(data)
    assert isinstance(d, DagDefinition)
    assert parse_definition(d.to_json()) == d
    assert len(d.topological_order()) == len(d.nodes)


def test_retry_policy_defaults() -> None:
    d = parse_definition(minimal(schedule={"type": "MANUAL", "retryPolicy": {"maxRetries": 2}}))
    assert d.schedule.retry_policy is not None
    assert (d.schedule.retry_policy.retry_interval_s, d.schedule.retry_policy.backoff_multiplier) == (
        60.0,
        1.0,
    )
    assert error_of(minimal(schedule={"retryPolicy": {"backoffMultiplier": 0.5}})).path == (
        "schedule.retryPolicy.backoffMultiplier"
    )
