"""The PYTHON workflow runtime: call `module:function` of an artifact with the step's inputs.

The artifact is a module (`steps.py`) or a package directory (pushed as a zip); the function is called
with the step's inputs as keyword arguments (plus `shard` and `shards` when it declares them) and
returns the mapping of its outputs. Functions decorated with `@swarm.step` are plain functions here.

A worker process is reused across attempts, so an artifact is imported once per worker. Different
versions of an artifact may use the same module names: before importing from one artifact, the modules
this worker imported from another artifact directory leave `sys.modules`, so a step always runs the code
of its own artifact version.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from swarm import __version__
from swarm.errors import Fatal, InvalidPayload
from swarm.plugins.step_data import resolve_inputs
from swarm.plugins.step_runtime import check_step_payload, fetch_artifact, measured, step_result, store_root
from swarm.taskapi import TaskContext

__all__ = ["PythonStep", "handler"]

_ENTRYPOINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class PythonStep:
    """`step.python`: `{"entrypoint": "module:function", "artifact": ..., "inputs": {...}}` -> outputs."""

    name = "step.python"
    version = __version__
    #: Fetches its artifact from a peer's data server when this node has no copy.
    network = True

    def __init__(self) -> None:
        # The artifact directory the last step in this worker ran from: while steps keep coming from
        # it, no other artifact's modules can be loaded, and the scan of `sys.modules` (about half of a
        # trivial step's cost in the worker) is skipped.
        self._root: Path | None = None

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the step payload and the entry point's form."""
        check_step_payload(payload, self.name)
        if not _ENTRYPOINT.fullmatch(payload["entrypoint"]):
            raise InvalidPayload(f"{self.name}: entrypoint must look like 'module:function'")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Import the entry point from the artifact and call it with the inputs."""
        root = fetch_artifact(ctx, payload)
        if root != self._root:
            _forget_other_artifacts(root, store_root(ctx))
            self._root = root
        function = _load(root, payload["entrypoint"])
        inputs, bytes_in = resolve_inputs(ctx, payload)
        kwargs = _arguments(function, inputs, payload)
        with measured() as usage:
            outputs = function(**kwargs)
        return step_result(ctx, payload, outputs, usage, self.name, bytes_in)


def _load(root: Path, entrypoint: str) -> Any:
    module_name, _, qualname = entrypoint.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise Fatal(f"step.python: cannot import {module_name!r} from the artifact: {exc}") from None
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise Fatal(f"step.python: {module_name!r} has no {qualname!r}") from None
    target = getattr(target, "__wrapped__", target)
    if not callable(target):
        raise Fatal(f"step.python: {entrypoint} is not callable")
    return target


def _forget_other_artifacts(root: Path, artifacts_root: Path) -> None:
    """Drop modules and import paths of other artifact directories than `root`."""
    mine = str(root)
    theirs = str(artifacts_root)
    sys.path[:] = [p for p in sys.path if not p.startswith(theirs) or p == mine]
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(theirs) and not path.startswith(mine + "/"):
            del sys.modules[name]


def _arguments(function: Any, inputs: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The inputs as keyword arguments; a missing required parameter is fatal (another try cannot
    help)."""
    kwargs: dict[str, Any] = dict(inputs)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return kwargs
    params = signature.parameters
    for extra in ("shard", "shards"):
        if extra in params and extra not in kwargs:
            kwargs[extra] = payload.get(extra, 0 if extra == "shard" else 1)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise Fatal(f"step.python: {function.__name__}() takes no input(s) {unknown}")
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise Fatal(f"step.python: {function.__name__}(): {exc}") from None
    return kwargs


handler = PythonStep()
