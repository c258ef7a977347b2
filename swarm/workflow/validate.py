"""The contract check at define time: is this DAG well formed, and can this cluster run it?

`validate` never raises for a bad DAG: it reports. Errors make the definition invalid (a cycle, an
unreachable node, a required input of a non-root node nobody provides, a mapping from an output the
parent does not declare, a type mismatch, a condition that does not parse or typecheck, an undefined
standard or a broken one, a runtime no member offers). Warnings are risks a run may still survive
(resources no member has today, a GPU request without a GPU member, a timeout shorter than the SLA or
than past runs, an unknown type name, a part of the DAG not connected to the rest, a required input of a
root node, which must come as a run parameter); fields swarm accepts but does not apply come as INFO
issues among the warnings. Suggestions carry an `action` for the cockpit (LOWER_PARALLELISM,
SPLIT_BY_KEY).

Every check is linear in nodes plus edges: the members are scanned once per distinct resource request,
and each distinct condition text is parsed once, so a 10,000-node definition validates in well under a
second.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from swarm.workflow import mrstep
from swarm.workflow.condition_syntax import ConditionError
from swarm.workflow.conditions import Condition, parse_condition
from swarm.workflow.durations import format_duration
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import DagDefinition, DagNode, Edge, FieldSpec
from swarm.workflow.standards import TaskStandard, apply_standard

__all__ = [
    "ClusterView",
    "Issue",
    "MemberView",
    "NodeHistory",
    "Severity",
    "Suggestion",
    "ValidationResult",
    "type_fits",
    "validate",
]

Severity = Literal["ERROR", "WARNING", "INFO"]
#: Upstream tasks feeding a single-task reduce stage from which splitting it is suggested.
FAN_IN_TO_SPLIT = 4
_KNOWN_TYPES = frozenset(
    {
        "STRING",
        "NUMBER",
        "INTEGER",
        "BOOLEAN",
        "OBJECT",
        "ANY",
        "DATE",
        "DATETIME",
        "DATE_RANGE",
        "ARRAY",
        "MAP",
    }
)
_NODE_PATH = re.compile(r"nodes\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class MemberView:
    """What validation needs to know about one live member of the swarm."""

    node_id: str
    name: str
    cores: int
    memory_mb: int
    disk_gb: float
    gpu: bool
    runtimes: frozenset[str]
    labels: Mapping[str, str] = field(default_factory=dict)
    slots: int = 1


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The live members at validation time."""

    members: tuple[MemberView, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeHistory:
    """Past runs of one DAG node."""

    runs: int
    success_rate: float
    mean_duration_s: float
    p95_duration_s: float


@dataclass(frozen=True, slots=True)
class Issue:
    """An error, warning or note, about one node (`node_id`) or the whole DAG (None)."""

    node_id: str | None
    message: str
    severity: Severity

    def to_json(self) -> dict[str, Any]:
        """The seed's `{"nodeId", "message", "severity"}`."""
        return {"nodeId": self.node_id, "message": self.message, "severity": self.severity}


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An improvement the cockpit can offer as `action`."""

    node_id: str | None
    message: str
    action: str

    def to_json(self) -> dict[str, Any]:
        """The seed's `{"nodeId", "message", "action"}`."""
        return {"nodeId": self.node_id, "message": self.message, "action": self.action}


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """What `validate` found; `is_valid` is true iff there are no errors."""

    is_valid: bool
    errors: list[Issue]
    warnings: list[Issue]
    suggestions: list[Suggestion]

    def to_json(self) -> dict[str, Any]:
        """The seed's `validationResults` shape, plus `errors`."""
        return {
            "isValid": self.is_valid,
            "errors": [issue.to_json() for issue in self.errors],
            "warnings": [issue.to_json() for issue in self.warnings],
            "suggestions": [suggestion.to_json() for suggestion in self.suggestions],
        }


# ---------------------------------------------------------------------------------------------------------
# Types


def _parse_type(text: str) -> tuple[str, tuple[Any, ...]]:
    """`ARRAY<map<string, number>>` -> ("ARRAY", (("MAP", (("STRING", ()), ("NUMBER", ()))),))."""
    text = text.strip()
    if "<" not in text or not text.endswith(">"):
        return text.upper(), ()
    head, inner = text.split("<", 1)
    args: list[str] = []
    depth, start = 0, 0
    body = inner[:-1]
    for i, char in enumerate(body):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            args.append(body[start:i])
            start = i + 1
    args.append(body[start:])
    return head.strip().upper(), tuple(_parse_type(arg) for arg in args)


def _unknown(parsed: tuple[str, tuple[Any, ...]], out: set[str]) -> None:
    name, args = parsed
    if name not in _KNOWN_TYPES:
        out.add(name)
    for arg in args:
        _unknown(arg, out)


def _fits(out: tuple[str, tuple[Any, ...]], into: tuple[str, tuple[Any, ...]]) -> bool:
    (a, a_args), (b, b_args) = out, into
    if (b in ("ANY", "OBJECT") and not b_args) or (a == "ANY" and not a_args):
        return True
    if a == "INTEGER" and b == "NUMBER":
        return True
    if a != b:
        return False
    if not b_args or not a_args:
        # ARRAY without an item type means ARRAY<ANY>: a bare one fits any array and takes any array.
        return True
    return len(a_args) == len(b_args) and all(_fits(x, y) for x, y in zip(a_args, b_args, strict=True))


def type_fits(output_type: str, input_type: str) -> tuple[bool, frozenset[str]]:
    """Whether a value of `output_type` may feed an input of `input_type`, and the unknown type names seen.

    Equal types fit; INTEGER fits NUMBER; anything fits OBJECT and ANY (and an ANY output is taken on
    trust); ARRAY<x> fits ARRAY<y> when x fits y, MAP likewise. An unknown name fits only itself.
    """
    out, into = _parse_type(output_type), _parse_type(input_type)
    unknown: set[str] = set()
    _unknown(out, unknown)
    _unknown(into, unknown)
    return _fits(out, into), frozenset(unknown)


# ---------------------------------------------------------------------------------------------------------
# The checks


class _Report:
    """Collects issues; one instance per `validate` call."""

    def __init__(self) -> None:
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.suggestions: list[Suggestion] = []

    def error(self, node_id: str | None, message: str) -> None:
        self.errors.append(Issue(node_id, message, "ERROR"))

    def warning(self, node_id: str | None, message: str, severity: Severity = "WARNING") -> None:
        self.warnings.append(Issue(node_id, message, severity))

    def suggest(self, node_id: str | None, message: str, action: str) -> None:
        self.suggestions.append(Suggestion(node_id, message, action))


def validate(
    definition: DagDefinition,
    standards: Mapping[str, TaskStandard],
    cluster: ClusterView,
    history: Mapping[str, NodeHistory] | None = None,
    artifacts: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> ValidationResult:
    """Check `definition` against itself, the task `standards` (by "name@version"), the live `cluster`,
    the past runs of its nodes (`history`, by node id) and, when given, the cluster's `artifacts` (an
    artifact id -> its metadata, None when the cluster has no such artifact)."""
    report = _Report()
    nodes = _effective_nodes(definition, standards, report)
    _check_shape(definition, report)
    _check_connected(definition, report)
    conditions: dict[str, Condition | ConditionError] = {}
    for node in definition.nodes:
        _check_inputs(definition, nodes, nodes[node.node_id], report)
        for edge in definition.parents(node.node_id):
            _check_condition(edge, nodes[edge.source], conditions, report)
    _check_cluster(definition, nodes, cluster, report)
    for node in nodes.values():
        if node.task.family == "MAPREDUCE":
            _check_mapreduce(definition, node, artifacts, report)
    _check_history(nodes, standards, history or {}, report)
    for note in definition.not_applied:
        match = _NODE_PATH.match(note.path)
        node_id = definition.nodes[int(match[1])].node_id if match else None
        report.warning(node_id, f"{note.path} is not applied: {note.reason}", "INFO")
    return ValidationResult(not report.errors, report.errors, report.warnings, report.suggestions)


def _effective_nodes(
    definition: DagDefinition, standards: Mapping[str, TaskStandard], report: _Report
) -> dict[str, DagNode]:
    """Each node as its standard makes it (schemas, capped resources, timeout)."""
    nodes: dict[str, DagNode] = {}
    for node in definition.nodes:
        ref = node.task.standard
        standard = standards.get(ref) if ref is not None else None
        if ref is not None and standard is None:
            report.error(node.node_id, f"standard {ref} is not defined")
        if standard is None:
            nodes[node.node_id] = node
            continue
        nodes[node.node_id], problems = apply_standard(node, standard)
        for problem in problems:
            report.error(node.node_id, problem)
    return nodes


def _check_shape(definition: DagDefinition, report: _Report) -> None:
    """No cycles, and every node reachable from a root."""
    try:
        definition.topological_order()
        return
    except DefinitionError as exc:
        report.error(None, exc.message)
    roots = [node.node_id for node in definition.nodes if not definition.parents(node.node_id)]
    if not roots:
        report.error(None, "no root node: every node has a parent, so the edges form a cycle")
    seen = set(roots)
    stack = list(roots)
    while stack:
        for edge in definition.children(stack.pop()):
            if edge.target not in seen:
                seen.add(edge.target)
                stack.append(edge.target)
    for node in definition.nodes:
        if node.node_id not in seen:
            report.error(node.node_id, "not reachable from any root node: it is on or after a cycle")


def _check_connected(definition: DagDefinition, report: _Report) -> None:
    """Warn about nodes in a weakly connected component other than the largest."""
    parent = {node.node_id: node.node_id for node in definition.nodes}

    def find(item: str) -> str:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for edge in definition.edges:
        a, b = find(edge.source), find(edge.target)
        if a != b:
            parent[b] = a
    groups: dict[str, list[str]] = {}
    for node in definition.nodes:
        groups.setdefault(find(node.node_id), []).append(node.node_id)
    if len(groups) < 2:
        return
    main = max(groups.values(), key=len)
    for members in groups.values():
        if members is main:
            continue
        shown = ", ".join(members[:5]) + (", ..." if len(members) > 5 else "")
        for node_id in members:
            report.warning(
                node_id,
                f"not connected to the rest of the DAG (a separate part of {len(members)} nodes: {shown})",
            )


def _check_inputs(
    definition: DagDefinition, nodes: Mapping[str, DagNode], node: DagNode, report: _Report
) -> None:
    """Every required input is fed, every mapping reads a declared output of a fitting type."""
    schema = node.task.input_schema
    fed: dict[str, str] = {}
    unknown: set[str] = set()
    for edge in definition.parents(node.node_id):
        where = f"edge {edge.source} -> {edge.target}"
        outputs = nodes[edge.source].task.output_schema
        for name, output in edge.data_mapping.items():
            if name in fed:
                report.error(
                    node.node_id, f"{where}: input {name} is already mapped by the edge from {fed[name]}"
                )
                continue
            fed[name] = edge.source
            declared = schema.get(name)
            if schema and declared is None:
                report.error(
                    node.node_id, f"{where}: maps input {name}, which {node.node_id} does not declare"
                )
            if outputs is None:
                continue
            given = outputs.get(output)
            if given is None:
                listed = ", ".join(outputs) or "none"
                report.error(
                    node.node_id, f"{where}: {edge.source} has no output {output} (it declares {listed})"
                )
            elif declared is not None:
                # A fanned-out parent hands on the list of its shards' values (`swarm.workflow.gate`).
                parent = nodes[edge.source]
                fanned = parent.execution.parallelism > 1 and parent.task.family != "MAPREDUCE"
                given_type = f"ARRAY<{given.type}>" if fanned else given.type
                fits, names = type_fits(given_type, declared.type)
                unknown |= names
                if fits:
                    continue
                if fanned and type_fits(given.type, declared.type)[0]:
                    # The seed's own pipelines map a scalar from a map stage into the next stage; the
                    # values arrive as a list, which the step must expect: say so, do not refuse it.
                    report.warning(
                        node.node_id,
                        f"{where}: {edge.source} runs as {nodes[edge.source].execution.parallelism} shards,"
                        f" so input {name} receives a list of their {output} values: declare it {given_type}",
                    )
                    continue
                report.error(
                    node.node_id,
                    f"{where}: output {output} is {given_type}, but input {name} takes {declared.type}",
                )
    for name in sorted(unknown):
        report.warning(node.node_id, f"unknown type {name}: it is compatible only with itself")
    root = not definition.parents(node.node_id)
    for name, spec in schema.items():
        if not _needed(name, spec, node) or name in fed:
            continue
        if root:
            # The seed's own example leaves a root's dateRange unmapped and calls the DAG valid: a root's
            # required inputs come from the run's parameters when it is triggered.
            report.warning(node.node_id, f"required input {name} must be given as a run parameter")
        else:
            report.error(
                node.node_id,
                f"required input {name} is not mapped from any parent and has no default or param",
            )


def _needed(name: str, spec: FieldSpec, node: DagNode) -> bool:
    return spec.required and not spec.has_default and name not in node.task.params


def _check_condition(
    edge: Edge, parent: DagNode, cache: dict[str, Condition | ConditionError], report: _Report
) -> None:
    """The edge's condition parses and typechecks against the parent's declared outputs."""
    parsed = cache.get(edge.condition)
    if parsed is None:
        try:
            parsed = parse_condition(edge.condition)
        except ConditionError as exc:
            parsed = exc
        cache[edge.condition] = parsed
    where = f"edge {edge.source} -> {edge.target}: condition {edge.condition!r}"
    if isinstance(parsed, ConditionError):
        report.error(edge.target, f"{where}: {parsed}")
        return
    outputs = parent.task.output_schema
    if outputs is not None and parsed.outputs_referenced:
        for problem in parsed.typecheck({name: spec.type for name, spec in outputs.items()}):
            report.error(edge.target, f"{where}: {problem}")


def _check_cluster(
    definition: DagDefinition, nodes: Mapping[str, DagNode], cluster: ClusterView, report: _Report
) -> None:
    """Resources, GPUs and runtimes against the live members; parallelism against their slots."""
    members = cluster.members
    if not members:
        families = sorted({node.task.family for node in nodes.values()})
        report.warning(
            None,
            "the cluster has no live members: resources and runtimes ("
            + ", ".join(families)
            + ") were not checked",
        )
        _check_reduce(definition, nodes, report)
        return
    offered = {"SWARM"}.union(*(member.runtimes for member in members))
    slots = sum(member.slots for member in members)
    any_gpu = any(member.gpu for member in members)
    shortfall: dict[tuple[float, float, float, bool], str | None] = {}
    for node in nodes.values():
        res = node.resources
        family = node.task.family
        if family not in offered:
            report.error(
                node.node_id,
                f"runtime {family}: no member offers it (members offer {', '.join(sorted(offered))})",
            )
        if res.gpu_units > 0 and not any_gpu:
            report.warning(node.node_id, f"asks for {res.gpu_units} GPU unit(s); no member has a GPU")
        key = (res.cpu_cores, res.memory_mb, res.disk_gb, res.gpu_units > 0 and any_gpu)
        if key not in shortfall:
            shortfall[key] = _shortfall(key, members)
        if shortfall[key] is not None:
            report.warning(node.node_id, f"no member can run it: {shortfall[key]}")
        if node.execution.parallelism > slots:
            report.suggest(
                node.node_id,
                f"parallelism {node.execution.parallelism} is more than the {slots} task slots of the whole"
                f" cluster; tasks beyond that only wait, so lower it to {slots}",
                "LOWER_PARALLELISM",
            )
    _check_reduce(definition, nodes, report)


def _check_mapreduce(
    definition: DagDefinition,
    node: DagNode,
    artifacts: Callable[[str], Mapping[str, Any] | None] | None,
    report: _Report,
) -> None:
    """A MAPREDUCE step runs an app from a `mapreduce` artifact (or a built-in one), maps its input
    `input`, declares no `_` inputs (its own tasks use them) and no outputs it does not have."""
    ref = node.task.artifact_id
    if ref is None:
        app = node.task.entrypoint or node.task.class_name
        if app not in mrstep.BUILTIN_APPS:
            report.error(
                node.node_id,
                "a MAPREDUCE step runs the app of an artifact (artifactId) or a built-in app named by its"
                f" entrypoint ({', '.join(mrstep.BUILTIN_APPS)}); {app or 'none'!r} is neither",
            )
    elif artifacts is not None:
        meta = artifacts(ref)
        if meta is None:
            report.error(node.node_id, f"artifact {ref} of its MapReduce app is not in the cluster")
        elif meta.get("kind") != "mapreduce":
            report.error(
                node.node_id,
                f"artifact {ref} is not a MapReduce app (it was pushed as {meta.get('kind')}; push the"
                " app's module with --kind mapreduce, which checks it defines map and reduce)",
            )
    schema = node.task.input_schema
    for name in schema:
        if name.startswith("_"):
            report.error(node.node_id, f"input {name}: a MAPREDUCE step's own tasks use the names starting _")
    fed = mrstep.INPUT in node.task.params or mrstep.INPUT in schema
    fed = fed or any(mrstep.INPUT in edge.data_mapping for edge in definition.parents(node.node_id))
    if not fed:
        report.error(
            node.node_id,
            f"a MAPREDUCE step maps its input {mrstep.INPUT!r}: map it from an upstream output, declare it"
            " (a run parameter) or give it in params",
        )
    for name, spec in (node.task.output_schema or {}).items():
        known = mrstep.OUTPUTS.get(name)
        if known is None:
            report.error(
                node.node_id,
                f"output {name}: a MAPREDUCE step outputs {', '.join(mrstep.OUTPUTS)}, nothing else",
            )
        elif not type_fits(known, spec.type)[0]:
            report.error(node.node_id, f"output {name} is {known}, not {spec.type}")


def _shortfall(key: tuple[float, float, float, bool], members: tuple[MemberView, ...]) -> str | None:
    cores, memory, disk, gpu = key
    if any(
        m.cores >= cores and m.memory_mb >= memory and m.disk_gb >= disk and (m.gpu or not gpu)
        for m in members
    ):
        return None
    reasons = []
    for asked, best, unit in (
        (cores, max(m.cores for m in members), "cores"),
        (memory, max(m.memory_mb for m in members), "MB of memory"),
        (disk, max(m.disk_gb for m in members), "GB of disk"),
    ):
        if asked > best:
            reasons.append(f"needs {asked:g} {unit}; the largest member has {best:g}")
    if reasons:
        return "; ".join(reasons)
    wanted = f"{cores:g} cores, {memory:g} MB of memory, {disk:g} GB of disk" + (" and a GPU" if gpu else "")
    return f"no single member has {wanted} together"


def _check_reduce(definition: DagDefinition, nodes: Mapping[str, DagNode], report: _Report) -> None:
    """A single-task reduce stage after a wide fan-out is the DAG's bottleneck."""
    for node in nodes.values():
        if not node.execution.is_reduce_stage or node.execution.parallelism != 1:
            continue
        fan_in = sum(nodes[edge.source].execution.parallelism for edge in definition.parents(node.node_id))
        if fan_in >= FAN_IN_TO_SPLIT:
            report.suggest(
                node.node_id,
                f"this reduce stage runs as one task over the output of {fan_in} upstream tasks; split it by"
                " key (e.g. by region) so that the parts reduce in parallel",
                "SPLIT_BY_KEY",
            )


def _check_history(
    nodes: Mapping[str, DagNode],
    standards: Mapping[str, TaskStandard],
    history: Mapping[str, NodeHistory],
    report: _Report,
) -> None:
    """The SLA of each node's standard against its past runs, and its timeout against both."""
    for node in nodes.values():
        standard = standards.get(node.task.standard) if node.task.standard else None
        longest = standard.sla.max_duration_s if standard else None
        floor = standard.sla.min_success_rate if standard else None
        past = history.get(node.node_id)
        runs = past.runs if past else 0
        timeout = node.execution.timeout_s
        if past and runs and longest is not None and past.p95_duration_s > longest:
            report.warning(
                node.node_id,
                f"its p95 duration {_span(past.p95_duration_s)} over {runs} runs exceeds the SLA maximum"
                f" {_span(longest)} of {node.task.standard}",
            )
        if past and runs and floor is not None and past.success_rate < floor:
            report.warning(
                node.node_id,
                f"its success rate {past.success_rate:.1%} over {runs} runs is below the SLA minimum"
                f" {floor:.1%} of {node.task.standard}",
            )
        if timeout is not None and longest is not None and timeout < longest:
            report.warning(
                node.node_id,
                f"timeout {_span(timeout)} is shorter than the SLA maximum {_span(longest)}: runs the SLA"
                " accepts would be cut off",
            )
        if timeout is not None and past and runs and timeout < past.p95_duration_s:
            report.warning(
                node.node_id,
                f"timeout {_span(timeout)} is shorter than the p95 duration {_span(past.p95_duration_s)}"
                f" of its {runs} past runs",
            )


def _span(seconds: float) -> str:
    return format_duration(round(seconds, 3)) if seconds >= 0 else f"{seconds}s"
