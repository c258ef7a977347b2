"""The registry validates plugins at start-up and names the plugin and distribution in every error."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from swarm.errors import InvalidPayload, UnknownTaskType
from swarm.registry import PluginError, Registry
from swarm.taskapi import TaskContext

BUILTINS = {"command", "echo", "file_operation", "python_eval", "sleep", "system_info"}
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "swarm-reverse"


@dataclass
class FakeDist:
    name: str
    version: str = "1.0"


@dataclass
class FakeEntryPoint:
    """Stands in for `importlib.metadata.EntryPoint`: `load()` returns `obj` or raises it."""

    name: str
    obj: Any
    dist: FakeDist | None = None
    value: str = "fake.module:handler"

    def load(self) -> Any:
        if isinstance(self.obj, BaseException):
            raise self.obj
        return self.obj


class Good:
    version = "1.0"

    def __init__(self, name: str = "good") -> None:
        self.name = name

    def validate(self, payload: dict[str, Any]) -> None:
        if "x" not in payload:
            raise InvalidPayload("needs x")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        return payload["x"]


class GoodClass(Good):
    """A class entry point: the registry instantiates it with no arguments."""

    name = "klass"

    def __init__(self) -> None:
        pass


class ExplodingClass(Good):
    name = "boom"

    def __init__(self) -> None:
        raise RuntimeError("no config file")


def ep(name: str, obj: Any, dist: str = "dist-a") -> FakeEntryPoint:
    return FakeEntryPoint(name, obj, FakeDist(dist))


def test_installed_entry_points_include_the_builtins() -> None:
    registry = Registry.from_entry_points()
    assert set(registry.names()) >= BUILTINS
    assert "swarm-cluster" in registry.origin("echo")


def test_loads_instances_and_instantiates_classes() -> None:
    registry = Registry.from_entry_points([ep("good", Good()), ep("klass", GoodClass)])
    assert registry.names() == ["good", "klass"]
    assert isinstance(registry.get("klass"), GoodClass)
    assert registry.origin("good") == "dist-a 1.0"


def test_duplicate_names_name_both_distributions() -> None:
    with pytest.raises(PluginError, match=r"'good' is registered twice: by dist-a 1\.0 and by dist-b 1\.0"):
        Registry.from_entry_points([ep("good", Good()), ep("good", Good(), dist="dist-b")])


def test_broken_plugin_names_plugin_and_distribution() -> None:
    with pytest.raises(PluginError) as info:
        Registry.from_entry_points([ep("bad", ImportError("No module named 'numpyy'"), dist="acme-tasks")])
    message = str(info.value)
    assert "'bad'" in message and "acme-tasks 1.0" in message and "numpyy" in message


def test_failing_constructor_is_reported() -> None:
    with pytest.raises(PluginError, match=r"'boom'.*ExplodingClass\(\) failed: RuntimeError: no config file"):
        Registry.from_entry_points([ep("boom", ExplodingClass)])


def test_wrong_name_is_rejected() -> None:
    with pytest.raises(PluginError, match="name attribute is 'good', expected 'other'"):
        Registry.from_entry_points([ep("other", Good())])


@pytest.mark.parametrize(
    ("attr", "value", "problem"),
    [
        ("version", 1, "version attribute must be a str"),
        ("run", None, "no callable run"),
        ("validate", "nope", "no callable validate"),
        ("run", lambda payload: None, r"run cannot be called as run\(ctx, payload\)"),
        ("validate", lambda: None, r"validate cannot be called as validate\(payload\)"),
    ],
)
def test_handler_shape_is_checked(attr: str, value: Any, problem: str) -> None:
    handler = Good()
    setattr(handler, attr, value)
    with pytest.raises(PluginError, match=problem):
        Registry.from_entry_points([ep("good", handler)])


def test_lenient_registry_logs_and_skips_broken_plugins(caplog: pytest.LogCaptureFixture) -> None:
    eps = [ep("bad", ImportError("gone")), ep("good", Good()), ep("good", Good(), dist="dist-b")]
    with caplog.at_level(logging.ERROR, logger="swarm.registry"):
        registry = Registry.from_entry_points(eps, strict=False)
    assert registry.names() == ["good"]
    assert len(registry.problems) == 2
    assert "'bad'" in caplog.text and "dist-b" in caplog.text


def test_unknown_type_lists_known_types() -> None:
    registry = Registry.from_entry_points([ep("good", Good()), ep("klass", GoodClass)])
    with pytest.raises(UnknownTaskType, match="unknown task type 'nope'; known types: good, klass"):
        registry.get("nope")
    with pytest.raises(UnknownTaskType, match="known types: none"):
        Registry().get("nope")


def test_validate_looks_up_then_delegates() -> None:
    registry = Registry.from_entry_points([ep("good", Good())])
    registry.validate("good", {"x": 1})
    with pytest.raises(InvalidPayload, match="needs x"):
        registry.validate("good", {})
    with pytest.raises(UnknownTaskType):
        registry.validate("missing", {"x": 1})


def test_register_in_code_uses_the_same_checks() -> None:
    registry = Registry()
    registry.register(Good("alpha"), origin="tests")
    assert "alpha" in registry and len(registry) == 1 and list(registry) == ["alpha"]
    with pytest.raises(PluginError, match="registered twice: by tests and by <registered in code>"):
        registry.register(Good("alpha"))


def test_example_plugin_loads_through_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    entry = EntryPoint(name="reverse", value="swarm_reverse:handler", group="swarm.tasks")
    registry = Registry.from_entry_points([entry])
    handler = registry.get("reverse")
    registry.validate("reverse", {"text": "stressed"})
    ctx = TaskContext(node_id="n1", task_id="t1", attempt=1, work_dir=".")
    assert handler.run(ctx, {"text": "stressed"}) == {"reversed": "desserts"}
    with pytest.raises(InvalidPayload):
        registry.validate("reverse", {"text": 42})
    assert "unknown distribution" in registry.origin("reverse")
