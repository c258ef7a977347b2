"""`command` runs only what the owner listed, where it may, with an environment it did not inherit."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from swarm.errors import ConfigError, InvalidPayload, TaskRefused
from swarm.plugins.command import BASE_ENV, resolve_commands
from swarm.plugins.command import handler as command
from swarm.taskapi import TaskContext, TaskPolicy

ENV = shutil.which("env") or "/usr/bin/env"


def ctx(work_dir: Path, **policy: Any) -> TaskContext:
    return TaskContext("n1", "t1", 1, str(work_dir), TaskPolicy(**{"allow_command": True, **policy}))


def run(context: TaskContext, **payload: Any) -> Any:
    command.validate(payload)
    return command.run(context, payload)


def test_an_empty_allow_list_refuses_everything_and_says_how_to_allow(tmp_path: Path) -> None:
    with pytest.raises(TaskRefused) as info:
        run(ctx(tmp_path), argv=["true"])
    assert "allows no programs" in str(info.value) and "[tasks] allowed_commands" in str(info.value)


def test_names_resolve_once_on_the_nodes_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    assert resolve_commands(["tool", str(tool)]) == (str(tool), str(tool))
    with pytest.raises(ConfigError, match="is not an executable file"):
        resolve_commands([str(tmp_path / "bin")])  # a directory is no program
    with pytest.raises(ConfigError, match="absolute path or a bare name"):
        resolve_commands(["./tool"])


def test_the_program_gets_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_TEST_SECRET", "hunter2")
    result = run(ctx(tmp_path, allowed_commands=(ENV,)), argv=["env"])
    env = dict(line.split("=", 1) for line in result["stdout"].splitlines())
    assert env == {**BASE_ENV, "HOME": str(tmp_path)}
    result = run(ctx(tmp_path, allowed_commands=(ENV,)), argv=["env"], env={"EXTRA": "1", "LANG": "C"})
    env = dict(line.split("=", 1) for line in result["stdout"].splitlines())
    assert env == {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C", "EXTRA": "1"}


@pytest.mark.parametrize("env", [[], {"": "x"}, {"A=B": "x"}, {"A": 1}, {"A": "x\0y"}, "A=B"])
def test_a_bad_environment_is_an_invalid_payload(env: Any) -> None:
    with pytest.raises(InvalidPayload, match="env"):
        command.validate({"argv": ["env"], "env": env})


def test_the_working_directory_stays_in_the_work_dir_or_allowed_paths(tmp_path: Path) -> None:
    work, allowed = tmp_path / "work", tmp_path / "allowed"
    (work / "sub").mkdir(parents=True)
    allowed.mkdir()
    context = ctx(work, allowed_commands=(sys.executable,), allowed_paths=(str(allowed),))
    pwd = [sys.executable, "-c", "import os; print(os.getcwd())"]
    assert run(context, argv=pwd)["stdout"].strip() == str(work)
    assert run(context, argv=pwd, cwd="sub")["stdout"].strip() == str(work / "sub")
    assert run(context, argv=pwd, cwd=str(allowed))["stdout"].strip() == str(allowed)
    for cwd in (str(tmp_path), "..", "/"):
        with pytest.raises(TaskRefused, match="cwd"):
            run(context, argv=pwd, cwd=cwd)
