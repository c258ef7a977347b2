"""The MAPREDUCE runtime: a step that runs a job of the MapReduce engine inside a workflow run.

Theory of operation. A MAPREDUCE step is not one task that submits a job and waits for it: it is
expanded, when the run is compiled, into the engine's own shape inside the run's job — M map tasks, R
reduce tasks that wait for every map, and one collecting task whose outcome is the step's:

    <run>.<node>.map.<i>      i < M   step.mapreduce.map: map split i of the step's input
    <run>.<node>.reduce.<r>   r < R   step.mapreduce.reduce: merge partition r of every map's runs, reduce
    <run>.<node>                      step.mapreduce.collect: the step, the reduce outputs in order

So the job is a child of the run in the strongest sense: its tasks are in the run's retained spec from
the start, committed exactly once in the run's job log, retried by the step's policy, and adopted by a
successor coordinator like every other task. There is no second submitter that must stay alive, no
parent waiting in a slot for a child (which could deadlock a small swarm), and no link between two jobs
to rebuild after a failover: a committed map is never run again by a new coordinator, and a map whose
output died with its node is recomputed by the reducer that needs it, as the engine always does.

The number of maps is fixed when the run starts (`parallelism`, default `mapParallelismDefault`), while
the input arrives only when the upstream steps end: each map task cuts its own split out of the step's
input with `plan_splits` and `cut`, pure functions of the input and (i, M), so a retry or a reducer
recomputing a lost map takes exactly the same bytes.

Every map and reduce task carries the step's edges (its inflows), so it runs, is skipped or fails with
the step by the documented join rule; the reduces also wait for the maps (condition SUCCESS) and the
collector for the reduces. The step's own task id is the collector's, which is what downstream edges,
the run's state and its history read.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm.messages import Inflow, TaskSpec

if TYPE_CHECKING:
    from swarm.workflow.model import DagDefinition, DagNode

__all__ = [
    "BUILTIN_APPS",
    "COLLECT_TYPE",
    "INPUT",
    "MAPS_INPUT",
    "MAP_TYPE",
    "OUTPUTS",
    "REDUCE_TYPE",
    "MapReduceSettings",
    "Piece",
    "app_problem",
    "cut",
    "expand",
    "part_of",
    "plan_splits",
    "settings",
    "step_task_ids",
]

MAP_TYPE = "step.mapreduce.map"
REDUCE_TYPE = "step.mapreduce.reduce"
COLLECT_TYPE = "step.mapreduce.collect"
#: The engine's built-in apps a step may name without an artifact: all but `sort`, whose range
#: partitioning needs boundaries sampled from the whole input before any map starts.
BUILTIN_APPS = ("wordcount", "indexer", "grep", "groupby")
#: The input that holds the data to map; every other input is a parameter of the app.
INPUT = "input"
#: Inputs the expansion wires between the step's own tasks; a step may not declare `_`-names.
MAPS_INPUT = "_maps"
_REDUCED = {"_partition": "partition", "_keys": "keys", "_records": "records"}
#: What a MAPREDUCE step outputs.
OUTPUTS = {
    "partitions": "ARRAY<STRING>",
    "keys": "INTEGER",
    "records": "INTEGER",
    "maps": "INTEGER",
    "reduces": "INTEGER",
}
_PARTS = ("map", "reduce")

#: (element, piece, pieces): piece `piece` of `pieces` line-aligned pieces of input element `element`.
Piece = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class MapReduceSettings:
    """How a MAPREDUCE step's job runs: maps, reduces, and the engine knobs mapReduceConfig sets."""

    maps: int
    reduces: int
    compress: bool = False
    spill_threshold_mb: int | None = None

    def to_payload(self) -> dict[str, Any]:
        """The part of every task payload of the step that says how its job runs."""
        return {
            "maps": self.maps,
            "reduces": self.reduces,
            "compress": self.compress,
            "spillMB": self.spill_threshold_mb,
        }


def settings(definition: DagDefinition, node: DagNode) -> MapReduceSettings:
    """Maps from `parallelism` (whose default is `mapParallelismDefault`), reduces from
    `reduceParallelism`, else `reduceParallelismDefault`, else 1; `compressionEnabled` and
    `spillThresholdMB` when the DAG's mapReduceConfig is enabled."""
    mr = definition.map_reduce
    if mr is not None and not mr.enabled:
        mr = None
    reduces = node.execution.reduce_parallelism or (mr.reduce_parallelism_default if mr else None) or 1
    return MapReduceSettings(
        maps=node.execution.parallelism,
        reduces=reduces,
        compress=bool(mr and mr.compression_enabled),
        spill_threshold_mb=mr.spill_threshold_mb if mr else None,
    )


def step_task_ids(run_id: str, node_id: str, s: MapReduceSettings) -> tuple[str, ...]:
    """Every task of the step: its maps, its reduces, then the step's own (collecting) task."""
    base = f"{run_id}.{node_id}"
    maps = tuple(f"{base}.map.{i}" for i in range(s.maps))
    reduces = tuple(f"{base}.reduce.{r}" for r in range(s.reduces))
    return (*maps, *reduces, base)


def part_of(local_id: str) -> tuple[str, str, int] | None:
    """`node.map.3` -> ("node", "map", 3); None when `local_id` (a task id without its run) is no map or
    reduce task of a MAPREDUCE step."""
    rest, _, index = local_id.rpartition(".")
    node_id, _, part = rest.rpartition(".")
    if not node_id or part not in _PARTS or not index.isdigit():
        return None
    return node_id, part, int(index)


def expand(
    run_id: str, node_id: str, s: MapReduceSettings, template: TaskSpec, payload: dict[str, Any]
) -> tuple[TaskSpec, ...]:
    """The step's tasks. `template` carries what every task of the step shares (priority, timeout,
    retry, requirements, and the step's inflows and `after`); `payload` the step payload."""
    ids = step_task_ids(run_id, node_id, s)
    map_ids, reduce_ids, own = ids[: s.maps], ids[s.maps : s.maps + s.reduces], ids[-1]
    config = s.to_payload()

    def task(task_id: str, kind: str, part: dict[str, Any], inflows: tuple[Inflow, ...]) -> TaskSpec:
        after = tuple(source for flow in inflows for source in flow.sources)
        return TaskSpec(
            task_id=task_id,
            type=kind,
            payload={**payload, "mapreduce": {**config, **part}},
            priority=template.priority,
            timeout=template.timeout,
            retry=template.retry,
            requirements=template.requirements,
            after=after,
            inflows=inflows,
        )

    to_maps = Inflow(map_ids, "SUCCESS", {MAPS_INPUT: "map"})
    maps = [task(t, MAP_TYPE, {"part": "map", "index": i}, template.inflows) for i, t in enumerate(map_ids)]
    reduces = [
        task(t, REDUCE_TYPE, {"part": "reduce", "index": r}, (*template.inflows, to_maps))
        for r, t in enumerate(reduce_ids)
    ]
    collect = task(own, COLLECT_TYPE, {"part": "collect"}, (Inflow(reduce_ids, "SUCCESS", dict(_REDUCED)),))
    return (*maps, *reduces, collect)


def plan_splits(elements: int, maps: int) -> tuple[tuple[Piece, ...], ...]:
    """What each of `maps` map tasks maps of an input of `elements` elements.

    With at least as many elements as maps, map i takes the elements [i*n/M, (i+1)*n/M) whole (a
    fanned-out upstream's shards, or a list of files, are spread without cutting any). With fewer, each
    element is cut into line-aligned pieces, element k into M//n pieces plus one for the first M%n
    elements, and each map takes one piece. Deterministic: a retry, and a reducer recomputing a lost map,
    map the same bytes."""
    if elements <= 0:
        return tuple(() for _ in range(maps))
    if elements >= maps:
        return tuple(
            tuple((k, 0, 1) for k in range(i * elements // maps, (i + 1) * elements // maps))
            for i in range(maps)
        )
    base, extra = divmod(maps, elements)
    out: list[tuple[Piece, ...]] = []
    for k in range(elements):
        count = base + (1 if k < extra else 0)
        out.extend(((k, j, count),) for j in range(count))
    return tuple(out)


def cut(data: bytes, piece: int, pieces: int) -> bytes:
    """Piece `piece` of `data` cut into `pieces` parts at line boundaries: each part starts at the first
    line that starts at or after its nominal start (j * len / pieces), so the parts cover `data` exactly
    once and split no line (a part may be empty when a line is longer than a part)."""

    def start(j: int) -> int:
        if j <= 0:
            return 0
        if j >= pieces:
            return len(data)
        newline = data.find(b"\n", j * len(data) // pieces - 1)
        return len(data) if newline < 0 else newline + 1

    begin = start(piece)
    return data[begin : max(begin, start(piece + 1))]


def app_problem(source: str) -> str | None:
    """Why `source` is not the module of a MapReduce app, or None: it must define `map` or `map_arrays`,
    and `reduce`, `reduce_arrays` or `COMBINER`, at its top level.

    The text is parsed, never run: a node checking an artifact pushed to it executes none of it (the
    app is loaded, and fully checked, where its tasks run)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"it is not valid Python: {exc.msg} (line {exc.lineno})"
    names: set[str] = set()
    for statement in tree.body:
        match statement:
            case ast.FunctionDef(name=name) | ast.AsyncFunctionDef(name=name) | ast.ClassDef(name=name):
                names.add(name)
            case ast.Assign(targets=targets):
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            case ast.AnnAssign(target=ast.Name(id=name)):
                names.add(name)
            case ast.Import(names=aliases) | ast.ImportFrom(names=aliases):
                names.update((a.asname or a.name).partition(".")[0] for a in aliases)
            case _:
                pass
    if not names & {"map", "map_arrays"}:
        return "it defines neither map(filename, contents) nor map_arrays(filename, data, params)"
    if not names & {"reduce", "reduce_arrays", "COMBINER"}:
        return "it defines no reduce(key, values), reduce_arrays(...) or COMBINER"
    return None
