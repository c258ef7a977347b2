"""Job files and command-line task options -> `SubmitJob`. Documented in `docs/jobs.md`.

A job file (JSON or YAML)::

    kind: batch            # batch (tasks run as their `after` allows), chain (each step gets the
                           # previous result as payload["previous"]), or group (all at once, wait for all)
    vars: {name: world}    # template parameters; `{{name}}` in any string is replaced; --var overrides
    defaults:              # applied to every task unless it says otherwise
      priority: normal     # urgent | high | normal | low | background
      timeout: 30
      max_retries: 2
      backoff: exponential # fixed | linear | exponential
      require: {min_cores: 2, platform: linux}   # also isolation: sandbox, network: true
    tasks:
      - id: greet          # optional; generated when missing
        type: echo
        payload: {message: "hello {{name}}"}
        after: [other-id]  # batch only
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from swarm.devices.capabilities import field_specs
from swarm.errors import InvalidSpec
from swarm.ids import new_job_id
from swarm.messages import PRIORITIES, Requirements, RetryPolicy, SubmitJob, TaskSpec

__all__ = [
    "REQUIREMENT_KEYS",
    "load_job_file",
    "parse_requirements",
    "priority_index",
    "render",
    "task_spec",
]

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_TASK_KEYS = {
    "id",
    "type",
    "payload",
    "after",
    "priority",
    "timeout",
    "max_retries",
    "backoff",
    "retry_base",
    "retry_cap",
    "jitter",
    "require",
    "pending_timeout",
}


def _requirement_types() -> dict[str, type]:
    """The requirements a job may set (`FieldSpec.settable`), each with the type its text becomes: the
    field's own, from `Requirements`, without its None."""
    hints = typing.get_type_hints(Requirements)
    out: dict[str, type] = {}
    for name, spec in field_specs(Requirements).items():
        if spec.settable:
            hint = hints[name]
            if isinstance(hint, types.UnionType):
                (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
            out[name] = typing.get_origin(hint) or hint
    return out


_REQ_TYPES = _requirement_types()
#: What `--require KEY=VALUE` and a job file's `require:` accept.
REQUIREMENT_KEYS: tuple[str, ...] = tuple(_REQ_TYPES)


def priority_index(value: str | int) -> int:
    """'urgent'..'background' or 0..4 -> 0..4."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(PRIORITIES):
        return value
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES.index(value)
    raise InvalidSpec(f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}")


def parse_requirements(items: dict[str, Any] | list[str]) -> Requirements:
    """From a mapping, or from `KEY=VALUE` strings as `--require` gives them."""
    raw: dict[str, Any] = {}
    if isinstance(items, list):
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise InvalidSpec(f"--require takes KEY=VALUE, got {item!r}")
            raw[key.strip()] = value.strip()
    else:
        raw = dict(items)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _REQ_TYPES.get(key)
        if kind is None:
            raise InvalidSpec(f"unknown requirement {key!r} (known: {', '.join(sorted(_REQ_TYPES))})")
        out[key] = _coerce(key, value, kind)
    return Requirements(**out)


def _coerce(key: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1"):
                return True
            if str(value).lower() in ("false", "no", "0"):
                return False
            raise ValueError(value)
        if kind is tuple:
            return tuple(value) if isinstance(value, list) else tuple(v for v in str(value).split(",") if v)
        result = kind(value)
    except (TypeError, ValueError):
        raise InvalidSpec(f"requirement {key}: expected {kind.__name__}, got {value!r}") from None
    problem = field_specs(Requirements)[key].problem(result)
    if problem is not None:
        raise InvalidSpec(f"requirement {key} {problem}")
    return result


def task_spec(task_id: str, entry: dict[str, Any], defaults: dict[str, Any]) -> TaskSpec:
    """One task from its file entry (or the CLI's options), with job-wide defaults."""
    merged = {**defaults, **entry}
    unknown = set(merged) - _TASK_KEYS
    if unknown:
        raise InvalidSpec(f"task {task_id!r}: unknown key(s) {sorted(unknown)}")
    if not isinstance(merged.get("type"), str):
        raise InvalidSpec(f"task {task_id!r}: needs a 'type'")
    payload = merged.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidSpec(f"task {task_id!r}: payload must be an object")
    retry = RetryPolicy(
        max_retries=int(merged.get("max_retries", 3)),
        backoff=merged.get("backoff", "exponential"),
        base=float(merged.get("retry_base", 0.5)),
        cap=float(merged.get("retry_cap", 30.0)),
        jitter=float(merged.get("jitter", 0.1)),
    )
    if retry.backoff not in ("fixed", "linear", "exponential"):
        raise InvalidSpec(f"task {task_id!r}: backoff must be fixed, linear or exponential")
    timeout = merged.get("timeout")
    pending = merged.get("pending_timeout")
    return TaskSpec(
        task_id=task_id,
        type=merged["type"],
        payload=payload,
        priority=priority_index(merged.get("priority", "normal")),
        timeout=None if timeout is None else float(timeout),
        retry=retry,
        requirements=parse_requirements(merged.get("require", {})),
        after=tuple(merged.get("after", ())),
        pending_timeout=None if pending is None else float(pending),
    )


def render(value: Any, variables: dict[str, str]) -> Any:
    """Replace `{{var}}` in every string; an unknown variable is an error, not a silent blank."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise InvalidSpec(f"template variable {name!r} has no value (give it with --var {name}=...)")
            return str(variables[name])

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    return value


def _parse_job_text(path: Path, text: str) -> Any:
    if path.suffix == ".json":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidSpec(f"{path}: not valid JSON: {exc}") from None
    import yaml  # only YAML job files need it: 10 ms of every command's start otherwise

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path}: not valid YAML: {exc}") from None


def load_job_file(
    path: Path, variables: dict[str, str] | None = None, job_id: str | None = None
) -> SubmitJob:
    """Parse, render and check a job file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSpec(f"cannot read {path}: {exc}") from None
    data = _parse_job_text(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise InvalidSpec(f"{path}: expected an object with a 'tasks' list")
    merged_vars = {**{k: str(v) for k, v in (data.get("vars") or {}).items()}, **(variables or {})}
    data = render(data, merged_vars)
    kind = data.get("kind", "batch")
    if kind not in ("batch", "chain", "group"):
        raise InvalidSpec(f"{path}: kind must be batch, chain or group, got {kind!r}")
    defaults = data.get("defaults") or {}
    job_id = job_id or new_job_id()
    specs: list[TaskSpec] = []
    for i, raw_entry in enumerate(data["tasks"]):
        if not isinstance(raw_entry, dict):
            raise InvalidSpec(f"{path}: task {i} must be an object")
        entry = dict(raw_entry)
        # Task ids are unique cluster-wide: the job id scopes the names a file uses.
        task_id = f"{job_id}.{entry.pop('id', f't{i}')}"
        if kind != "batch" and "after" in entry:
            raise InvalidSpec(f"{path}: 'after' is only for kind batch (a {kind} orders its tasks itself)")
        entry["after"] = [f"{job_id}.{dep}" for dep in entry.get("after", ())]
        spec = task_spec(task_id, entry, defaults)
        if kind == "chain" and specs:
            spec = _chained(spec, specs[-1].task_id)
        specs.append(spec)
    job = SubmitJob(job_id, tuple(specs), kind=kind)
    # Here rather than at the top: the job checks load the workflow conditions, and every `swarm submit`
    # loads this module for its parser's REQUIREMENT_KEYS.
    from swarm.core.jobs import check_job

    check_job(job)
    return job


def _chained(spec: TaskSpec, previous: str) -> TaskSpec:
    return replace(spec, after=(previous,), pipe=True)
