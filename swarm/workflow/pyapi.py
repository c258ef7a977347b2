"""The Python decorator API: `@step` functions composed by a `@dag` function build a `DagDefinition`.

Example::

    @step(outputs={"rows": "INTEGER"}, cpu_cores=1, memory_mb=256, timeout="PT5M", retries=2)
    def extract(region: str) -> dict: ...

    @step(outputs={"total": "NUMBER"})
    def total(rows: int) -> dict: ...

    @step()
    def alert(reason: str = "failed") -> dict: ...

    @dag(dag_id="sales", version="1.0.0", schedule="0 2 * * *", timezone="UTC")
    def sales() -> None:
        e = extract(region="EU")                       # a node; region="EU" becomes a constant param
        total(rows=e["rows"])                          # an edge extract -> total, dataMapping {rows: rows}
        alert.after(e, condition="FAILURE")()          # an edge with a condition (and no data)

    definition = sales.definition(artifact_id="sales-code-1")

Rules:

- Outside a dag body a step is the plain function: the PYTHON runtime calls it with its inputs as
  keyword arguments and it returns its output mapping.
- Inside a dag body, calling a step records a node and returns a `Handle`; `handle["name"]` is one of its
  outputs. Passing it as an argument makes an edge from that node with `dataMapping {argument: name}`;
  any other argument must be a JSON value and becomes a constant param.
- `step.after(*handles, condition="SUCCESS", node_id=None)(...)` calls the step with edges from
  `handles` carrying `condition` (see `swarm.workflow.conditions`); data edges from other parents carry
  SUCCESS. `node_id` names the node; otherwise a step used twice gets ids `name`, `name-2`, ...
- The node's inputSchema comes from the function's signature (str -> STRING, int -> INTEGER, float ->
  NUMBER, bool -> BOOLEAN, list -> ARRAY, dict -> OBJECT, anything else ANY; a parameter without a
  default is required), its outputSchema from `outputs`, its entrypoint is "module:qualname".

The dag body runs under a context variable (not a module global), so that bodies on several threads or
tasks never see each other's nodes.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from swarm.ids import is_id
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.durations import format_duration
from swarm.workflow.fields import DefinitionError, check_json_value
from swarm.workflow.model import DagDefinition

__all__ = ["Dag", "Handle", "Output", "Step", "dag", "step"]

_SCALARS: dict[object, str] = {
    str: "STRING",
    int: "INTEGER",
    float: "NUMBER",
    bool: "BOOLEAN",
    dict: "OBJECT",
}
_NAMED = {"str": "STRING", "int": "INTEGER", "float": "NUMBER", "bool": "BOOLEAN", "dict": "OBJECT"}


@dataclass(frozen=True, slots=True)
class Output:
    """One output of a recorded node: what `handle["name"]` returns."""

    node_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Handle:
    """A node recorded inside a dag body; index it by output name to pass that output on."""

    node_id: str
    outputs: frozenset[str] | None

    def __getitem__(self, name: str) -> Output:
        if self.outputs is not None and name not in self.outputs:
            listed = ", ".join(sorted(self.outputs)) or "none"
            raise DefinitionError(self.node_id, f"has no output {name!r} (it declares {listed})")
        return Output(self.node_id, name)


@dataclass(slots=True)
class _Builder:
    """The nodes and edges of one run of a dag body."""

    dag_id: str
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        step: Step,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        after: tuple[Handle, ...],
        condition: str,
        node_id: str | None,
    ) -> Handle:
        """Record one call of `step` as a node with its edges; return its handle."""
        where = f"{self.dag_id}: {step.name}(...)"
        try:
            bound = inspect.signature(step.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise DefinitionError(where, str(exc)) from None
        node_id = node_id or self._fresh(step.name)
        if any(node["nodeId"] == node_id for node in self.nodes):
            raise DefinitionError(where, f"a node {node_id!r} already exists in this dag")
        mappings: dict[str, dict[str, str]] = {parent.node_id: {} for parent in after}
        params: dict[str, Any] = {}
        for name, value in _arguments(step.fn, bound):
            if isinstance(value, Handle):
                raise DefinitionError(f"{where}.{name}", f"pass one output, e.g. {value.node_id}['result']")
            if isinstance(value, Output):
                if not any(node["nodeId"] == value.node_id for node in self.nodes):
                    raise DefinitionError(f"{where}.{name}", f"{value.node_id} is not a node of this dag")
                mappings.setdefault(value.node_id, {})[name] = value.name
            else:
                check_json_value(value, f"{where}.{name}")
                params[name] = value
        node = step.node_json(node_id)
        if params:
            node["taskDefinition"]["params"] = params
        self.nodes.append(node)
        conditions = {parent.node_id: condition for parent in after}
        for source, mapping in mappings.items():
            edge = {"from": source, "to": node_id, "dataMapping": mapping}
            self.edges.append({**edge, "condition": conditions.get(source, "SUCCESS")})
        return Handle(node_id, None if step.outputs is None else frozenset(step.outputs))

    def _fresh(self, name: str) -> str:
        count = self.used.get(name, 0) + 1
        self.used[name] = count
        return name if count == 1 else f"{name}-{count}"


_CURRENT: ContextVar[_Builder | None] = ContextVar("swarm_workflow_builder", default=None)


def _arguments(fn: Callable[..., Any], bound: inspect.BoundArguments) -> list[tuple[str, Any]]:
    """(name, value) of each argument given, with **kwargs flattened."""
    pairs: list[tuple[str, Any]] = []
    parameters = inspect.signature(fn).parameters
    for name, value in bound.arguments.items():
        if parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            pairs.extend(value.items())
        else:
            pairs.append((name, value))
    return pairs


class Step:
    """A function usable as a DAG step; see the module docstring."""

    def __init__(self, fn: Callable[..., Any], **options: Any) -> None:
        self.fn = fn
        self.name: str = options.pop("name", None) or fn.__name__
        if not is_id(self.name):
            raise DefinitionError(self.name, "a step's name must be a valid id")
        self.outputs: dict[str, str] | None = options.pop("outputs")
        self.options = options
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
                raise DefinitionError(f"{self.name}.{param.name}", "step inputs are passed by name")
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn

    @property
    def entrypoint(self) -> str:
        """`module:qualname` of the function, how the PYTHON runtime finds it. A step defined in a script
        run as `__main__` is found by the script's file name, as the artifact that ships it holds it."""
        module = self.fn.__module__
        if module == "__main__":
            module = Path(inspect.getfile(self.fn)).stem
        return f"{module}:{self.fn.__qualname__}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _CURRENT.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add(self, args, kwargs, (), "SUCCESS", None)

    def after(
        self, *parents: Handle, condition: str = "SUCCESS", node_id: str | None = None
    ) -> Callable[..., Handle]:
        """A caller of this step (inside a dag body) whose node follows `parents` under `condition`."""

        def call(*args: Any, **kwargs: Any) -> Handle:
            builder = _CURRENT.get()
            if builder is None:
                raise DefinitionError(self.name, "step.after(...) is only meaningful inside a @dag function")
            return builder.add(self, args, kwargs, parents, condition, node_id)

        return call

    def node_json(self, node_id: str) -> dict[str, Any]:
        """The seed-shaped node for one use of this step."""
        o = self.options
        task: dict[str, Any] = {"runtime": o["runtime"], "entrypoint": self.entrypoint}
        task["inputSchema"] = _input_schema(self.fn)
        if self.outputs is not None:
            task["outputSchema"] = {name: {"type": kind} for name, kind in self.outputs.items()}
        if o["standard"] is not None:
            task["standard"] = o["standard"]
        timeout = o["timeout"]
        execution: dict[str, Any] = {"parallelism": o["parallelism"]}
        if timeout is not None:
            execution["timeout"] = timeout if isinstance(timeout, str) else format_duration(timeout)
        if o["retries"] is not None:
            execution["maxRetries"] = o["retries"]
        resources = {"cpuCores": o["cpu_cores"], "memoryMB": o["memory_mb"], "diskGB": o["disk_gb"]}
        return {
            "nodeId": node_id,
            "name": self.name,
            "type": o["type"],
            "taskDefinition": task,
            "resourceRequirements": {**resources, "gpuUnits": o["gpu_units"]},
            "executionConfig": execution,
            "priority": o["priority"],
        }


def _input_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        # An annotation naming something undefined (or defined later) falls back to its text.
        hints = {}
    schema: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        entry: dict[str, Any] = {"type": _type_of(hints.get(param.name, param.annotation))}
        if param.default is inspect.Parameter.empty:
            entry["required"] = True
        else:
            try:
                check_json_value(param.default, param.name)
                entry["default"] = param.default
            except DefinitionError:
                pass  # a non-JSON default stays the function's own business
        schema[param.name] = entry
    return schema


def _type_of(annotation: object) -> str:
    if isinstance(annotation, str):
        return _NAMED.get(annotation.strip(), "ANY")
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        return f"ARRAY<{_type_of(args[0])}>" if len(args) == 1 else "ARRAY"
    if origin is dict or origin is Mapping:
        return "OBJECT"
    return "ANY"


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    outputs: Mapping[str, str] | None = None,
    name: str | None = None,
    type: str = "TASK",
    cpu_cores: float = 1,
    memory_mb: float = 0,
    disk_gb: float = 0,
    gpu_units: int = 0,
    timeout: str | float | None = None,
    retries: int | None = None,
    parallelism: int = 1,
    priority: str = "normal",
    standard: str | None = None,
    runtime: str = "PYTHON",
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    outputs: Mapping[str, str] | None = None,
    name: str | None = None,
    type: str = "TASK",
    cpu_cores: float = 1,
    memory_mb: float = 0,
    disk_gb: float = 0,
    gpu_units: int = 0,
    timeout: str | float | None = None,
    retries: int | None = None,
    parallelism: int = 1,
    priority: str = "normal",
    standard: str | None = None,
    runtime: str = "PYTHON",
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a DAG step (`@step` or `@step(outputs={"rows": "INTEGER"}, ...)`).

    `outputs` maps each output name to its seed type; `timeout` is ISO-8601 text or seconds; `retries`
    overrides the DAG's retryPolicy.maxRetries for this node.
    """
    options = {
        "outputs": None if outputs is None else dict(outputs),
        "name": name,
        "type": type,
        "cpu_cores": cpu_cores,
        "memory_mb": memory_mb,
        "disk_gb": disk_gb,
        "gpu_units": gpu_units,
        "timeout": timeout,
        "retries": retries,
        "parallelism": parallelism,
        "priority": priority,
        "standard": standard,
        "runtime": runtime,
    }
    if fn is not None:
        return Step(fn, **options)
    return lambda inner: Step(inner, **options)


class Dag:
    """A dag function; `definition()` runs its body and returns the `DagDefinition` it describes."""

    def __init__(self, body: Callable[[], object], header: dict[str, Any]) -> None:
        self.body = body
        self.header = header
        self.dag_id: str = header["dagId"]
        self.__doc__ = body.__doc__

    def definition(self, artifact_id: str | None = None) -> DagDefinition:
        """The definition the body describes; every PYTHON node gets `artifact_id` when it is given."""
        if _CURRENT.get() is not None:
            raise DefinitionError(self.dag_id, "a dag's definition cannot be built inside another dag body")
        builder = _Builder(self.dag_id)
        token = _CURRENT.set(builder)
        try:
            self.body()
        finally:
            _CURRENT.reset(token)
        if not builder.nodes:
            raise DefinitionError(self.dag_id, "the dag body called no step")
        if artifact_id is not None:
            for node in builder.nodes:
                node["taskDefinition"]["artifactId"] = artifact_id
        return parse_definition({**self.header, "nodes": builder.nodes, "edges": builder.edges})


def dag(
    *,
    dag_id: str,
    version: str = "1.0.0",
    name: str | None = None,
    description: str = "",
    schedule: str | None = None,
    timezone: str = "UTC",
    start_at: str | None = None,
    catchup: str = "LATEST",
    retries: int | None = None,
    retry_interval: str = "PT1M",
    backoff_multiplier: float = 1.0,
    retention_days: int | None = None,
) -> Callable[[Callable[[], object]], Dag]:
    """Make a function the body of a DAG. `schedule` is a cron expression (CRON); `start_at` an RFC 3339
    time (ONCE); neither means MANUAL. `retries` sets schedule.retryPolicy for every node."""
    kind = "CRON" if schedule is not None else "ONCE" if start_at is not None else "MANUAL"
    sched: dict[str, Any] = {"type": kind, "timezone": timezone, "catchup": catchup}
    if schedule is not None:
        sched["expression"] = schedule
    if start_at is not None:
        sched["startAt"] = start_at
    if retries is not None:
        sched["retryPolicy"] = {
            "maxRetries": retries,
            "retryInterval": retry_interval,
            "backoffMultiplier": backoff_multiplier,
        }
    header: dict[str, Any] = {"dagId": dag_id, "name": name or dag_id, "description": description}
    header |= {"version": version, "schedule": sched}
    if retention_days is not None:
        header["globalConfigs"] = {"dataRetentionPolicy": f"KEEP_{retention_days}_DAYS"}
    return lambda body: Dag(body, header)
