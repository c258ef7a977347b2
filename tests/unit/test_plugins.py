"""The built-in task handlers, called directly: payload checks, results, policy refusals, path escapes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from swarm.errors import Fatal, InvalidPayload, TaskRefused
from swarm.plugins import command, file_operation
from swarm.plugins.command import handler as command_handler
from swarm.plugins.echo import handler as echo
from swarm.plugins.file_operation import handler as files
from swarm.plugins.python_eval import handler as python_eval
from swarm.plugins.sleep import handler as sleep
from swarm.plugins.system_info import handler as system_info
from swarm.taskapi import TaskContext, TaskPolicy


def ctx_for(work_dir: Path, **policy: Any) -> TaskContext:
    return TaskContext("n1", "t1", 1, str(work_dir), TaskPolicy(**policy))


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return ctx_for(tmp_path)


# -- echo, sleep, system_info --------------------------------------------------------------------------------
def test_echo_returns_its_payload(ctx: TaskContext) -> None:
    payload = {"message": "hi", "n": [1, 2]}
    echo.validate(payload)
    assert echo.run(ctx, payload) == payload
    with pytest.raises(InvalidPayload):
        echo.validate(["not", "an", "object"])  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [-1, "1", True, None, float("nan"), float("inf")])
def test_sleep_rejects_bad_durations(seconds: Any) -> None:
    with pytest.raises(InvalidPayload, match="seconds"):
        sleep.validate({"seconds": seconds})


def test_sleep_sleeps(ctx: TaskContext) -> None:
    sleep.validate({"seconds": 0})
    assert sleep.run(ctx, {"seconds": 0.01}) == {"slept": 0.01}


def test_system_info_reports_the_device(ctx: TaskContext) -> None:
    system_info.validate({})
    info = system_info.run(ctx, {})
    assert info["node_id"] == "n1"
    assert {"hostname", "platform", "arch", "python", "cores", "memory"} <= set(info)
    assert info["cores"] >= 1 and info["memory"] > 0


# -- python_eval ---------------------------------------------------------------------------------------------
def test_python_eval_runs_expressions_and_returns_json_shapes(ctx: TaskContext) -> None:
    payload = {
        "expression": "({x for x in xs}, (1, 2), {1: 'a'}, zip('ab', xs))",
        "variables": {"xs": [3, 1]},
    }
    python_eval.validate(payload)
    assert python_eval.run(ctx, payload) == [[1, 3], [1, 2], {"1": "a"}, [["a", 3], ["b", 1]]]


@pytest.mark.parametrize(
    "payload",
    [
        {"expression": "__import__('os').system('id')"},
        {"expression": "x.__class__", "variables": {"x": 1}},
        {"expression": 42},
        {"expression": "1", "variables": []},
        {"expression": "_a", "variables": {"_a": 1}},
        {"expression": "1", "extra": True},
    ],
)
def test_python_eval_validate_rejects_without_running(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        python_eval.validate(payload)


def test_python_eval_big_integers_become_strings(ctx: TaskContext) -> None:
    assert python_eval.run(ctx, {"expression": "[2 ** 63 - 1, 2 ** 100, -(2 ** 63)]"}) == [
        2**63 - 1,
        str(2**100),
        -(2**63),
    ]


def test_python_eval_runtime_errors_are_fatal(ctx: TaskContext) -> None:
    with pytest.raises(Fatal, match="ZeroDivisionError"):
        python_eval.run(ctx, {"expression": "1 / 0"})
    with pytest.raises(Fatal, match="limit exceeded"):
        python_eval.run(ctx, {"expression": "'x' * 10 ** 9"})


# -- command -------------------------------------------------------------------------------------------------
def script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


PY = [sys.executable, "-c"]


def commands(work_dir: Path, *allowed: str, **policy: Any) -> TaskContext:
    return ctx_for(work_dir, allow_command=True, allowed_commands=allowed or (sys.executable,), **policy)


def test_command_is_refused_unless_allowed(ctx: TaskContext) -> None:
    command_handler.validate({"argv": ["true"]})
    with pytest.raises(TaskRefused, match="allow_command"):
        command_handler.run(ctx, {"argv": ["true"]})


def test_command_runs_without_a_shell_in_the_work_dir(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd()); print('$HOME;', sys.argv[1:]); sys.stderr.write('e'); exit(3)"
    result = command_handler.run(commands(tmp_path), {"argv": [*PY, code, "a b", "$x"]})
    assert result["returncode"] == 3
    assert result["stdout"].splitlines() == [str(tmp_path), "$HOME; ['a b', '$x']"]
    assert result["stderr"] == "e" and not result["stdout_truncated"]


def test_command_output_is_truncated(tmp_path: Path) -> None:
    result = command_handler.run(
        commands(tmp_path), {"argv": [*PY, f"print('x' * {command.MAX_OUTPUT * 3})"]}
    )
    assert len(result["stdout"]) == command.MAX_OUTPUT and result["stdout_truncated"]


def test_command_timeout_kills_the_program(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="did not finish"):
        command_handler.run(
            commands(tmp_path), {"argv": [*PY, "import time; time.sleep(30)"], "timeout": 0.2}
        )


def test_command_runs_only_allowed_executables_in_allowed_directories(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    ok = script(allowed / "bin", "hello", "echo hello")
    evil = script(outside, "evil", "echo evil")
    (allowed / "bin" / "link").symlink_to(evil)
    ctx = commands(tmp_path / "work", str(ok), allowed_paths=(str(allowed),))
    (tmp_path / "work").mkdir()
    assert command_handler.run(ctx, {"argv": [str(ok)], "cwd": str(allowed)})["stdout"] == "hello\n"
    assert command_handler.run(ctx, {"argv": ["hello"]})["stdout"] == "hello\n"  # by its file name
    assert command_handler.run(ctx, {"argv": ["./bin/hello"], "cwd": str(allowed)})["returncode"] == 0
    climbing = str(allowed / "bin" / ".." / ".." / "outside" / "evil")
    for program in (str(evil), str(allowed / "bin" / "link"), climbing, "sh", "evil"):
        with pytest.raises(TaskRefused, match="allowed_commands"):
            command_handler.run(ctx, {"argv": [program, "-c", "id"], "cwd": str(allowed)})
    with pytest.raises(TaskRefused, match="cwd"):
        command_handler.run(ctx, {"argv": [str(ok)], "cwd": str(outside)})


@pytest.mark.parametrize(
    "payload",
    [{}, {"argv": []}, {"argv": "ls -l"}, {"argv": ["ls", 1]}, {"argv": [""]}, {"argv": ["ls"], "timeout": 0},
     {"argv": ["ls"], "cwd": 3}, {"argv": ["ls"], "shell": True}],
)  # fmt: skip
def test_command_validate_rejects_bad_shapes(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        command_handler.validate(payload)


def test_command_reports_a_missing_executable(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")  # allowed when the node started, removed since
    with pytest.raises(FileNotFoundError):
        command_handler.run(commands(tmp_path, gone), {"argv": ["gone"]})


# -- file_operation ------------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.txt").write_text("top secret")
    return tmp_path / "root"


def fops(root: Path) -> TaskContext:
    return ctx_for(root, allow_file_operations=True, allowed_paths=(str(root),))


def do(ctx: TaskContext, **payload: Any) -> Any:
    files.validate(payload)
    return files.run(ctx, payload)


def test_file_operations_are_refused_unless_allowed(root: Path) -> None:
    with pytest.raises(TaskRefused, match="does not allow"):
        do(ctx_for(root), op="stat", path=str(root))
    with pytest.raises(TaskRefused, match="no allowed_paths"):
        do(ctx_for(root, allow_file_operations=True), op="stat", path=str(root))


def test_file_operations_round_trip(root: Path) -> None:
    ctx, path = fops(root), str(root / "sub" / "a.txt")
    assert do(ctx, op="mkdir", path=str(root / "sub"))["created"]
    assert do(ctx, op="write", path=path, data="héllo")["written"] == 6
    assert do(ctx, op="append", path=path, data="!")["written"] == 1
    assert do(ctx, op="read", path=path) == {"path": path, "data": "héllo!", "size": 7, "truncated": False}
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert do(ctx, op="stat", path=path)["type"] == "file"
    listing = do(ctx, op="list", path=str(root / "sub"))
    assert listing["entries"] == [{"name": "a.txt", "type": "file", "size": 7}]
    assert do(ctx, op="delete", path=path)["deleted"]
    assert do(ctx, op="delete", path=str(root / "sub"))["deleted"]
    assert do(ctx, op="list", path=str(root))["entries"] == []


def test_reads_are_bounded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_operation, "MAX_READ", 4)
    (root / "big").write_text("0123456789")
    result = do(fops(root), op="read", path=str(root / "big"))
    assert result["data"] == "0123" and result["truncated"] and result["size"] == 10


def test_paths_cannot_escape_the_allowed_root(root: Path) -> None:
    ctx = fops(root)
    (root / "link").symlink_to(root.parent / "secret.txt")
    (root / "dirlink").symlink_to(root.parent)
    for path in (
        str(root / ".." / "secret.txt"),
        str(root / "link"),
        str(root / "dirlink" / "secret.txt"),
        str(root.parent),
        "/etc/passwd",
    ):
        with pytest.raises(TaskRefused, match="outside"):
            do(ctx, op="read", path=path)
    with pytest.raises(TaskRefused, match="symbolic link"):
        do(ctx, op="write", path=str(root / "link"), data="overwritten")
    assert (root.parent / "secret.txt").read_text() == "top secret"
    with pytest.raises(TaskRefused, match="allowed root"):
        do(ctx, op="delete", path=str(root))


def test_a_sibling_with_a_common_prefix_is_outside(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data-private").mkdir()
    ctx = fops(tmp_path / "data")
    with pytest.raises(TaskRefused):
        do(ctx, op="list", path=str(tmp_path / "data-private"))


@pytest.mark.parametrize(
    "payload",
    [{"op": "read", "path": "relative.txt"}, {"op": "chmod", "path": "/tmp/x"},
     {"op": "write", "path": "/tmp/x"}, {"op": "read", "path": "/tmp/x", "data": "y"}, {"op": "read"}],
)  # fmt: skip
def test_file_operation_validate_rejects_bad_shapes(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload):
        files.validate(payload)
