"""What `swarm demo sales` defines: its task standards, its DAG (seed 004's shape) and its jar.

Versions are immutable in the cluster, so the DAG's and the artifacts' patch numbers come from their
content: the same demo twice re-uses them, changed code gets new ones.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "APP_FILE",
    "DAG_ID",
    "DEFAULT_RATE",
    "JVM_CLASS",
    "STEPS_DIR",
    "allocation_request",
    "build_definition",
    "build_jar",
    "content_version",
    "standards",
    "write_csv",
]

Json = dict[str, Any]

DAG_ID = "sales-analytics-demo"
STEPS_DIR = Path(__file__).parent / "steps"
JVM_SOURCE = Path(__file__).parent / "jvm" / "SalesCurrencyConverter.java"
JVM_CLASS = "SalesCurrencyConverter"
#: The aggregation step's MapReduce app, pushed as its own artifact of kind `mapreduce`.
APP_FILE = STEPS_DIR / "sales_aggregate.py"
#: USD per CNY used to convert revenue: a fixed demo figure, not a market rate.
DEFAULT_RATE = "0.1385"
#: A fixed date for the jar's entries, so the same source gives the same bytes (and artifact version).
_JAR_DATE = "2024-01-01T00:00:02Z"
# --- what the demo defines ------------------------------------------------------------------------


def content_version(data: bytes) -> str:
    """`1.0.<n>` from the content: versions are immutable, so changed code or a changed DAG gets a new
    one, and the same content the same one (a second demo run re-uses it)."""
    return f"1.0.{int(hashlib.sha256(data).hexdigest()[:8], 16) % 1_000_000}"


def standards() -> list[Json]:
    """The task standards the DAG's steps adopt: an ETL contract for the extract shards, a BATCH one for
    the MapReduce aggregation and an ANALYSIS one for the rest."""
    return [
        {
            "name": "sales-etl-extract",
            "version": "1.0",
            "category": "ETL",
            "description": "Reads a range of sales orders, drops invalid ones, emits the kept ones",
            "inputSchema": {
                "rows": {"type": "INTEGER", "required": True, "description": "orders in the data set"},
                "seed": {"type": "INTEGER", "required": True, "description": "which data set"},
            },
            "outputSchema": {
                "orders": {"type": "STRING", "description": "region,category,month,quantity,fen lines"},
                "rowsRead": {"type": "INTEGER"},
                "rowsKept": {"type": "INTEGER"},
            },
            "resourceCeiling": {"cpuCores": 2, "memoryMB": 1024, "diskGB": 1, "gpuUnits": 0},
            "sla": {"maxDuration": "PT5M", "minSuccessRate": 0.99},
        },
        {
            "name": "sales-aggregation",
            "version": "1.0",
            "category": "BATCH",
            "description": "A MapReduce job summing cleaned orders by region and category and by month",
            "resourceCeiling": {"cpuCores": 1, "memoryMB": 512, "gpuUnits": 0},
            "sla": {"maxDuration": "PT5M", "minSuccessRate": 0.99},
        },
        {
            "name": "sales-analysis",
            "version": "1.0",
            "category": "ANALYSIS",
            "description": "Small in-memory analysis of aggregated sales figures",
            "resourceCeiling": {"cpuCores": 1, "memoryMB": 512, "gpuUnits": 0},
            "sla": {"maxDuration": "PT2M", "minSuccessRate": 0.99},
        },
    ]


def _step(
    node_id: str,
    name: str,
    kind: str,
    artifact: str,
    entry: str,
    inputs: dict[str, str],
    outputs: dict[str, str],
    *,
    runtime: str = "PYTHON_3.11",
    standard: str = "sales-analysis@1.0",
    execution: Json | None = None,
    memory_mb: int = 256,
) -> Json:
    entry_key = "className" if runtime.startswith("JAVA") else "entrypoint"
    return {
        "nodeId": node_id,
        "name": name,
        "type": kind,
        "taskDefinition": {
            "artifactId": artifact,
            **({entry_key: entry} if entry else {}),
            "runtime": runtime,
            "standard": standard,
            "inputSchema": {k: {"type": t} for k, t in inputs.items()},
            "outputSchema": {k: {"type": t} for k, t in outputs.items()},
        },
        "resourceRequirements": {"cpuCores": 1, "memoryMB": memory_mb},
        "executionConfig": {"timeout": "PT2M", **(execution or {})},
    }


_CONVERTED = {"converted": "ARRAY<object>", "currency": "STRING", "rate": "STRING", "engine": "STRING"}


def build_definition(shards: int, steps_artifact: str, app_artifact: str, jar_artifact: str | None) -> Json:
    """The DAG (seed 004's shape) over the given artifact ids: the Python steps, the aggregation's
    MapReduce app and the jar (None: the currency step runs the Python fallback). Its version is derived
    from its content."""
    py = steps_artifact
    convert = (
        _step(
            "convert-currency",
            "Revenue to USD (JVM)",
            "TRANSFORM",
            jar_artifact,
            JVM_CLASS,
            {"tableTsv": "STRING", "rate": "STRING"},
            _CONVERTED,
            runtime="JAVA_17",
        )
        if jar_artifact
        else _step(
            "convert-currency",
            "Revenue to USD (Python fallback)",
            "TRANSFORM",
            py,
            "sales_pipeline:convert_currency",
            {"tableTsv": "STRING", "rate": "STRING"},
            _CONVERTED,
        )
    )
    table = {"table": "ARRAY<object>", "tableTsv": "STRING", "months": "ARRAY<object>"}
    nodes = [
        _step(
            "extract-sales",
            "Sales extraction and cleaning",
            "EXTRACT",
            py,
            "sales_pipeline:extract_map",
            {"rows": "INTEGER", "seed": "INTEGER"},
            {"orders": "STRING", "rowRange": "ARRAY<number>", "rowsRead": "INTEGER", "rowsKept": "INTEGER"},
            standard="sales-etl-extract@1.0",
            execution={"parallelism": shards, "timeout": "PT5M"},
            memory_mb=512,
        ),
        _step(
            "aggregate-sales",
            "Aggregation by region and category (MapReduce)",
            "AGGREGATE",
            app_artifact,
            "",
            {"input": "ARRAY<STRING>"},
            {"partitions": "ARRAY<STRING>", "keys": "INTEGER", "records": "INTEGER"},
            runtime="MAPREDUCE",
            standard="sales-aggregation@1.0",
            # One map per extract shard, two reduces: the shuffle crosses members.
            execution={"parallelism": shards, "reduceParallelism": 2, "timeout": "PT5M"},
        ),
        _step(
            "tabulate-sales",
            "Sales table",
            "TRANSFORM",
            py,
            "sales_pipeline:tabulate",
            {"partitions": "ARRAY<STRING>", "rowsRead": "ARRAY<number>", "rowsKept": "ARRAY<number>"},
            {**table, "rowsRead": "INTEGER", "rowsKept": "INTEGER"},
        ),
        convert,
        _step(
            "analyze-sales",
            "Shares, leaders and seasonality",
            "ANALYZE",
            py,
            "sales_pipeline:analyze",
            {"table": "ARRAY<object>", "months": "ARRAY<object>"},
            {"insights": "OBJECT", "topRegion": "STRING"},
        ),
        _step(
            "load-report",
            "Report",
            "LOAD",
            py,
            "sales_pipeline:load_report",
            {
                "table": "ARRAY<object>",
                "converted": "ARRAY<object>",
                "rate": "STRING",
                "engine": "STRING",
                "insights": "OBJECT",
                "rowsRead": "INTEGER",
            },
            {"report": "STRING", "rows": "INTEGER", "insights": "OBJECT"},
        ),
    ]
    edges = [
        {"from": "extract-sales", "to": "aggregate-sales", "dataMapping": {"input": "orders"}},
        {
            "from": "extract-sales",
            "to": "tabulate-sales",
            "dataMapping": {"rowsRead": "rowsRead", "rowsKept": "rowsKept"},
        },
        {"from": "aggregate-sales", "to": "tabulate-sales", "dataMapping": {"partitions": "partitions"}},
        {"from": "tabulate-sales", "to": "convert-currency", "dataMapping": {"tableTsv": "tableTsv"}},
        {
            "from": "tabulate-sales",
            "to": "analyze-sales",
            "dataMapping": {"table": "table", "months": "months"},
        },
        {
            "from": "tabulate-sales",
            "to": "load-report",
            "dataMapping": {"table": "table", "rowsRead": "rowsRead"},
        },
        {
            "from": "convert-currency",
            "to": "load-report",
            "dataMapping": {"converted": "converted", "rate": "rate", "engine": "engine"},
        },
        {"from": "analyze-sales", "to": "load-report", "dataMapping": {"insights": "insights"}},
    ]
    definition: Json = {
        "dagId": DAG_ID,
        "name": "Sales analytics (swarm demo)",
        "description": "Deterministic sales orders cleaned in shards and aggregated by region and category"
        " with a MapReduce job",
        "version": "0.0.0",
        "schedule": {
            "type": "MANUAL",
            "retryPolicy": {"maxRetries": 2, "retryInterval": "PT1S", "backoffMultiplier": 2.0},
        },
        "nodes": nodes,
        "edges": edges,
        "mapReduceConfig": {
            "enabled": True,
            "mapParallelismDefault": shards,
            "reduceParallelismDefault": 2,
            "shuffleStrategy": "SORT_BASED",
            "compressionEnabled": False,
        },
    }
    body = repr(sorted(definition.items())).encode()
    definition["version"] = content_version(body)
    return definition


# --- artifacts --------------------------------------------------------------------------------------


def build_jar(work: Path, say: Callable[[str], None]) -> Path | None:
    """Compile the JVM step into `work/sales-jvm.jar`; None (and why, through `say`) without a JDK or
    when the build fails."""
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        say("no JDK here (javac and jar not found): the currency step runs its Python fallback")
        return None
    classes = work / "classes"
    classes.mkdir(parents=True, exist_ok=True)
    target = work / "sales-jvm.jar"
    commands = (
        [javac, "--release", "17", "-d", str(classes), str(JVM_SOURCE)],
        [jar, "--create", "--file", str(target), f"--date={_JAR_DATE}", "-C", str(classes), "."],
    )
    for argv in commands:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            say(f"building the jar failed ({exc}): the currency step runs its Python fallback")
            return None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            say(
                f"{Path(argv[0]).name} failed ({' / '.join(tail)}):"
                " the currency step runs its Python fallback"
            )
            return None
    return target


def write_csv(path: Path, rows: int, seed: int) -> None:
    """The demo's data set as a CSV file, for a look at what the steps generate."""
    from swarm.demo.steps.sales_pipeline import CSV_HEADER, generate

    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
        writer.writerows(generate(seed, 0, rows))


def allocation_request(definition: Json) -> Json:
    """Seed 004's allocation request for the DAG's steps (the node names the allocation)."""
    compute = [
        {
            "nodeId": n["nodeId"],
            "resourceProfile": "STANDARD",
            "cpuCores": n["resourceRequirements"]["cpuCores"],
            "memoryMB": n["resourceRequirements"]["memoryMB"],
        }
        for n in definition["nodes"]
    ]
    return {
        "dagId": DAG_ID,
        "resourceRequirements": {"computeResources": compute},
        "priorityConfig": {"executionPriority": "NORMAL", "preemptionAllowed": False},
    }
