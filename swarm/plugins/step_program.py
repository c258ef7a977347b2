"""The SHELL and JVM workflow runtimes: a program from an artifact, JSON in, JSON out.

SHELL runs a script of the artifact with the node's `sh`, which must be among the programs the node's
owner allows (`[tasks] allow_command` and `allowed_commands`, as for the `command` task): a shell step
is a command. JVM runs `java -cp <jar> <className>` with the `java` found on this node; a node without
one does not offer the runtime, so no JVM step is placed there. Scala and Kotlin jars run the same way
(their standard library inside the jar).

Either program gets the step's inputs as one JSON object on standard input and in the environment
(`SWARM_INPUTS`, and `SWARM_IN_<NAME>` per input: strings as they are, other values as JSON), and
prints its outputs as a JSON object on the last non-empty line of standard output. Everything else it
prints is its log. A non-zero exit fails the attempt (retried by policy).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from swarm import __version__
from swarm.devices.probe import java_executable
from swarm.errors import Fatal, InvalidPayload, TaskRefused
from swarm.plugins.command import BASE_ENV, allowed_executable, run_program
from swarm.plugins.step_data import resolve_inputs
from swarm.plugins.step_runtime import check_step_payload, fetch_artifact, measured, step_result
from swarm.taskapi import TaskContext

__all__ = ["JvmStep", "ShellStep", "jvm_handler", "shell_handler"]

_CLASS = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*")
_SCRIPT = re.compile(r"[\w.-]+(/[\w.-]+)*")
_NAME = re.compile(r"[^A-Za-z0-9_]")


class _ProgramStep:
    name = ""
    version = __version__
    #: Fetches its artifact from a peer's data server when this node has no copy.
    network = True

    def validate(self, payload: dict[str, Any]) -> None:
        check_step_payload(payload, self.name)

    def _run(self, ctx: TaskContext, payload: dict[str, Any], argv: list[str], executable: str) -> Any:
        inputs, bytes_in = resolve_inputs(ctx, payload)
        env = {**BASE_ENV, "HOME": ctx.work_dir, **_input_env(inputs, payload)}
        stdin = orjson.dumps(inputs) + b"\n"
        with measured() as usage:
            out = run_program(argv, executable, ctx.work_dir, env, stdin=stdin)
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        usage.log.extend(lines[:-1])
        usage.log.extend(out.stderr.splitlines())
        if out.returncode != 0:
            tail = "\n".join(out.stderr.splitlines()[-5:])
            raise RuntimeError(f"{self.name}: exit status {out.returncode}: {tail}")
        if not lines:
            return step_result(ctx, payload, {}, usage, self.name, bytes_in)
        try:
            outputs = orjson.loads(lines[-1])
        except orjson.JSONDecodeError:
            last = lines[-1][:200]
            raise Fatal(
                f"{self.name}: the last line of output must be a JSON object of outputs, got {last!r}"
            ) from None
        return step_result(ctx, payload, outputs, usage, self.name, bytes_in)


def _input_env(inputs: dict[str, Any], payload: dict[str, Any]) -> dict[str, str]:
    env = {
        "SWARM_INPUTS": orjson.dumps(inputs).decode(),
        "SWARM_SHARD": str(payload.get("shard", 0)),
        "SWARM_SHARDS": str(payload.get("shards", 1)),
    }
    for name, value in inputs.items():
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if "\0" not in text:
            env[f"SWARM_IN_{_NAME.sub('_', name).upper()}"] = text
    return env


class ShellStep(_ProgramStep):
    """`step.shell`: run the artifact's script (its entrypoint, a relative path) with `sh`."""

    name = "step.shell"

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the step payload and the script path's form."""
        super().validate(payload)
        script = payload["entrypoint"]
        if not _SCRIPT.fullmatch(script) or ".." in script.split("/"):
            raise InvalidPayload(f"{self.name}: entrypoint must be a relative path inside the artifact")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Enforce the node's command policy, then run the script."""
        if not ctx.policy.allow_command:
            raise TaskRefused(f"{self.name}: this node does not allow commands (allow_command is off)")
        sh = allowed_executable("sh", ctx.policy.allowed_commands, ctx.work_dir)
        root = fetch_artifact(ctx, payload)
        script = _inside(root, payload["entrypoint"])
        return self._run(ctx, payload, [sh, str(script)], sh)


class JvmStep(_ProgramStep):
    """`step.jvm`: `java -cp <the artifact's jar> <className>`."""

    name = "step.jvm"

    def validate(self, payload: dict[str, Any]) -> None:
        """Check the step payload and the class name's form."""
        super().validate(payload)
        if not _CLASS.fullmatch(payload["entrypoint"]):
            raise InvalidPayload(f"{self.name}: entrypoint must be a class name like com.example.Main")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Run the class's main method with a heap that fits the node's memory limit."""
        java = java_executable()
        if java is None:
            raise TaskRefused(f"{self.name}: this node has no java")
        root = fetch_artifact(ctx, payload)
        jars = [root] if root.is_file() else sorted(root.rglob("*.jar"))
        if not jars:
            raise Fatal(f"{self.name}: the artifact holds no jar")
        classpath = os.pathsep.join(str(j) for j in jars)
        # The node caps a worker's address space; a JVM reserves far more than it uses unless told not to.
        flags = ["-Xmx256m", "-XX:ReservedCodeCacheSize=64m", "-XX:CompressedClassSpaceSize=64m"]
        argv = [java, *flags, "-XX:+UseSerialGC", "-cp", classpath, payload["entrypoint"]]
        return self._run(ctx, payload, argv, java)


def _inside(root: Path, relative: str) -> Path:
    base = root if root.is_dir() else root.parent
    path = (base / relative).resolve()
    if not path.is_relative_to(base.resolve()) or not path.is_file():
        raise Fatal(f"script {relative!r} is not a file of the artifact")
    return path


shell_handler = ShellStep()
jvm_handler = JvmStep()
