"""The task-handler registry: every task type this node can validate and run.

Theory of operation
-------------------
Handlers come from the `swarm.tasks` entry-point group, the same way for built-in and third-party plugins
(compare pluggy's `load_setuptools_entrypoints`). Each entry point loads an object that satisfies
`swarm.taskapi.TaskHandler`, or a class that does once instantiated with no arguments.

Everything is checked once, at start-up, so that a broken plugin is found when the node starts and not when
the first task of its type arrives on some other device: the handler's `name` must equal the entry point's
name, `version` must be a string, and `validate(payload)` / `run(ctx, payload)` must be callable with those
arguments. Two plugins claiming one name are rejected, naming both distributions, because silently picking
one would make two nodes of one swarm run different code for the same task type.

A strict registry (the default) raises `PluginError` at the first problem. A lenient one logs the problem,
skips that plugin and keeps the message in `problems`, so a node can still serve every other task type.
Leniency stops at swarm's own task types (entry points into the `swarm` package): when one of those does
not load, the installation itself is broken (typically the wrong `swarm` was imported, say a checkout in
the working directory shadowing the installed one), and `builtin_problems` lists them so that the node
refuses to serve instead of joining with no task types at all.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from swarm.errors import ConfigError, UnknownTaskType
from swarm.taskapi import TaskHandler

__all__ = ["ENTRY_POINT_GROUP", "EntryPointLike", "PluginError", "Registry", "is_builtin"]

ENTRY_POINT_GROUP = "swarm.tasks"

log = logging.getLogger(__name__)


class PluginError(ConfigError):
    """A task plugin could not be loaded or does not satisfy `TaskHandler`; the message names it."""


class EntryPointLike(Protocol):
    """The part of `importlib.metadata.EntryPoint` the registry uses, so tests can pass fakes."""

    @property
    def name(self) -> str:
        """The task type the plugin is registered as."""

    @property
    def value(self) -> str:
        """The `module:attribute` reference, quoted in error messages."""

    def load(self) -> Any:
        """Import and return the referenced object."""


def _distribution_of(ep: EntryPointLike) -> str:
    """Name the distribution an entry point came from, because errors must say which package to fix."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>"
    try:
        return f"{dist.name} {dist.version}"
    except Exception:  # a distribution with broken metadata must not hide the real error
        return "<unreadable distribution>"


def _accepts(func: Any, nargs: int) -> bool:
    """Whether `func` can be called with `nargs` positional arguments (builtins without signatures pass)."""
    try:
        inspect.signature(func).bind(*([None] * nargs))
    except TypeError:
        return False
    except ValueError:  # no signature available (some C callables); trust it
        return True
    return True


def _check_handler(obj: Any, name: str) -> str | None:
    """Return why `obj` is not a usable handler for task type `name`, or None if it is."""
    handler_name = getattr(obj, "name", None)
    if handler_name != name:
        return f"its name attribute is {handler_name!r}, expected {name!r} (the entry point's name)"
    if not isinstance(getattr(obj, "version", None), str):
        return "its version attribute must be a str"
    for method, nargs, args in (("validate", 1, "(payload)"), ("run", 2, "(ctx, payload)")):
        func = getattr(obj, method, None)
        if not callable(func):
            return f"it has no callable {method}{args}"
        if not _accepts(func, nargs):
            return f"{method} cannot be called as {method}{args}"
    return None


def is_builtin(ep: EntryPointLike) -> bool:
    """Whether an entry point names code inside the `swarm` package itself (a built-in task type)."""
    module = ep.value.partition(":")[0].strip()
    return module == "swarm" or module.startswith("swarm.")


class Registry:
    """Task handlers by name, validated at start-up; see the module docstring for the rules."""

    def __init__(self, *, strict: bool = True, quiet: bool = False) -> None:
        """Create an empty registry; `strict=False` skips broken plugins instead of raising, and `quiet`
        keeps the skipped ones out of the log (a worker reports them to its node, which logs them)."""
        self.strict = strict
        self.quiet = quiet
        self.problems: list[str] = []
        #: The problems of swarm's own task types: a node with any of these must not serve.
        self.builtin_problems: list[str] = []
        self._handlers: dict[str, TaskHandler] = {}
        self._origins: dict[str, str] = {}

    @classmethod
    def from_entry_points(
        cls, eps: Iterable[EntryPointLike] | None = None, *, strict: bool = True, quiet: bool = False
    ) -> Registry:
        """Build a registry from the installed `swarm.tasks` entry points, or from `eps` (fakes in tests)."""
        registry = cls(strict=strict, quiet=quiet)
        registry.load_entry_points(eps)
        return registry

    def load_entry_points(self, eps: Iterable[EntryPointLike] | None = None) -> int:
        """Load and register every entry point; return how many were registered."""
        if eps is None:
            eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        count = 0
        for ep in eps:
            dist = _distribution_of(ep)
            try:
                obj = self._load(ep, dist)
                self.register(obj, origin=dist)
            except PluginError as exc:
                if self.strict:
                    raise
                if not self.quiet:
                    log.error("skipping task plugin: %s", exc)
                self.problems.append(str(exc))
                if is_builtin(ep):
                    self.builtin_problems.append(str(exc))
                continue
            count += 1
        return count

    def _load(self, ep: EntryPointLike, dist: str) -> Any:
        """Import the entry point and instantiate it if it is a class, wrapping every failure."""
        where = f"task plugin {ep.name!r} ({ep.value}) from {dist}"
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
        if inspect.isclass(obj):
            try:
                obj = obj()
            except Exception as exc:
                raise PluginError(f"{where}: {obj.__name__}() failed: {type(exc).__name__}: {exc}") from exc
        problem = _check_handler(obj, ep.name)
        if problem is not None:
            raise PluginError(f"{where} is not a valid task handler: {problem}")
        return obj

    def register(self, handler: Any, *, origin: str = "<registered in code>") -> None:
        """Add one handler after the same checks entry points get; `origin` names it in errors."""
        name = getattr(handler, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"task handler from {origin} has no usable name: {name!r}")
        problem = _check_handler(handler, name)
        if problem is not None:
            raise PluginError(f"task plugin {name!r} from {origin} is not a valid task handler: {problem}")
        if name in self._handlers:
            raise PluginError(
                f"task type {name!r} is registered twice: by {self._origins[name]} and by {origin}"
            )
        self._handlers[name] = handler
        self._origins[name] = origin

    def get(self, name: str) -> TaskHandler:
        """Return the handler for task type `name`, or raise `UnknownTaskType` listing the known ones."""
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownTaskType(f"unknown task type {name!r}; known types: {known}") from None

    def validate(self, task_type: str, payload: dict[str, Any]) -> None:
        """Check that `task_type` exists here and accepts `payload`, without running anything."""
        self.get(task_type).validate(payload)

    def names(self) -> list[str]:
        """The registered task types, sorted so that messages and capability reports are stable."""
        return sorted(self._handlers)

    def origin(self, name: str) -> str:
        """Which distribution provided task type `name` (for status output and error messages)."""
        self.get(name)
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._handlers)
