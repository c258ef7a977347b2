"""The PYTHON, SHELL and JVM step runtimes, run in-process on an artifact already in the node's store."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from swarm.errors import Fatal, InvalidPayload, Retry, TaskRefused
from swarm.plugins.command import resolve_commands
from swarm.plugins.step_data import INLINE_LIMIT, REF_KEY
from swarm.plugins.step_program import jvm_handler, shell_handler
from swarm.plugins.step_python import handler as python_handler
from swarm.plugins.step_runtime import artifact_store
from swarm.taskapi import DataPlane, TaskContext, TaskPolicy

STEPS = b"""
def double(x):
    return {"y": 2 * x}

def part(rows, shard, shards):
    return {"mine": rows[shard::shards]}

def big():
    return {"blob": "z" * 300000}

def size(blob):
    return {"n": len(blob), "head": blob[:3]}

def wrong():
    return [1, 2]
"""


def context(tmp_path: Path, policy: TaskPolicy | None = None) -> TaskContext:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    data = DataPlane(str(tmp_path / "data"), "http://127.0.0.1:9")
    return TaskContext("n1", "run@1.step", 1, str(work), policy or TaskPolicy(), data)


def payload(
    ctx: TaskContext, name: str, filename: str, data: bytes, kind: str, entry: str, **extra: Any
) -> dict[str, Any]:
    meta = artifact_store(ctx).put(name, "1.0", kind, filename, data, 0.0, "u1")  # type: ignore[arg-type]
    return {
        "run": "run@1",
        "step": "step",
        "entrypoint": entry,
        "artifact": meta.to_json(),
        "sources": [],
        **extra,
    }


def test_python_steps_get_inputs_and_shards_and_return_outputs(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    p = payload(ctx, "steps", "steps.py", STEPS, "python", "steps:double", inputs={"x": 21})
    python_handler.validate(p)
    result = python_handler.run(ctx, p)
    assert result["outputs"] == {"y": 42} and result["usage"]["wallS"] >= 0
    p = payload(
        ctx,
        "steps",
        "steps.py",
        STEPS,
        "python",
        "steps:part",
        inputs={"rows": [0, 1, 2, 3, 4]},
        shard=1,
        shards=2,
    )
    assert python_handler.run(ctx, p)["outputs"] == {"mine": [1, 3]}


def test_python_step_errors_are_fatal_with_a_reason(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    with pytest.raises(InvalidPayload, match="module:function"):
        python_handler.validate(payload(ctx, "steps", "steps.py", STEPS, "python", "no-colon"))
    with pytest.raises(Fatal, match="has no 'missing'"):
        python_handler.run(ctx, payload(ctx, "steps", "steps.py", STEPS, "python", "steps:missing"))
    with pytest.raises(Fatal, match="mapping"):
        python_handler.run(ctx, payload(ctx, "steps", "steps.py", STEPS, "python", "steps:wrong"))
    with pytest.raises(Fatal, match="takes no input"):
        python_handler.run(
            ctx, payload(ctx, "steps", "steps.py", STEPS, "python", "steps:double", inputs={"q": 1})
        )


def test_a_large_output_goes_to_the_data_plane_by_reference(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    p = payload(ctx, "steps", "steps.py", STEPS, "python", "steps:big", dataToken="t" * 32)
    out = python_handler.run(ctx, p)
    ref = out["outputs"]["blob"][REF_KEY]
    assert ref["size"] > INLINE_LIMIT and ref["url"].startswith("http://127.0.0.1:9/f/mr/")
    assert out["usage"]["bytesOut"] == ref["size"]
    stored = next((tmp_path / "data" / "mr").rglob("*.blob.json"))
    assert orjson.loads(stored.read_bytes()) == "z" * 300000


def test_an_input_lost_with_its_member_is_made_again_from_its_recipe(tmp_path: Path) -> None:
    # The upstream ran elsewhere; its node (here: nothing listens at its data URL) is gone with the data.
    ctx = context(tmp_path)
    made = payload(ctx, "steps", "steps.py", STEPS, "python", "steps:big", dataToken="t" * 32)
    ref = python_handler.run(ctx, made)["outputs"]["blob"]
    for stored in (tmp_path / "data" / "mr").rglob("*.blob.json"):
        stored.unlink()
    use = payload(ctx, "steps", "steps.py", STEPS, "python", "steps:size", dataToken="t" * 32)
    use["inputs"] = {"blob": ref}
    with pytest.raises(Retry, match="cannot fetch an input"):
        python_handler.run(ctx, use)  # no recipe: the step waits for another attempt
    recipe = {"task": "run@1.make", "type": "step.python", "output": "blob", "payload": made}
    use["lineage"] = {ref[REF_KEY]["url"]: recipe}
    python_handler.validate(use)
    assert python_handler.run(ctx, use)["outputs"] == {"n": 300000, "head": "zzz"}
    # A recipe of a runtime this node cannot run again is no recipe.
    use["lineage"] = {ref[REF_KEY]["url"]: {**recipe, "type": "echo"}}
    with pytest.raises(Retry):
        python_handler.run(ctx, use)


def test_a_package_artifact_is_imported_by_module_name(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkgsteps/__init__.py", "")
        z.writestr("pkgsteps/calc.py", "def add(a, b):\n    return {'sum': a + b}\n")
    p = payload(
        ctx, "pkg", "pkg.zip", archive.read_bytes(), "python", "pkgsteps.calc:add", inputs={"a": 2, "b": 3}
    )
    assert python_handler.run(ctx, p)["outputs"] == {"sum": 5}


SCRIPT = b"""#!/bin/sh
echo "working on $SWARM_IN_NAME" >&2
echo "a log line"
printf '{"greeting": "hello %s", "shard": %s}\\n' "$SWARM_IN_NAME" "$SWARM_SHARD"
"""


def test_shell_steps_need_the_owners_permission_and_speak_json(tmp_path: Path) -> None:
    refused = context(tmp_path)
    p = payload(refused, "greet", "greet.sh", SCRIPT, "shell", "greet.sh", inputs={"name": "swarm"})
    shell_handler.validate(p)
    with pytest.raises(TaskRefused, match="allow_command"):
        shell_handler.run(refused, p)
    allowed = context(tmp_path, TaskPolicy(allow_command=True, allowed_commands=resolve_commands(["sh"])))
    out = shell_handler.run(allowed, p)
    assert out["outputs"] == {"greeting": "hello swarm", "shard": 0}
    assert "a log line" in out["log"] and "working on swarm" in out["log"]


JAVA = """
public class Upper {
    public static void main(String[] args) throws Exception {
        String in = new String(System.in.readAllBytes()).trim();
        System.out.println("reading " + in.length() + " bytes");
        System.out.println("{\\"echo\\": " + in + "}");
    }
}
"""


@pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None, reason="no JDK here")
def test_jvm_steps_run_a_class_of_the_jar(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Upper.java").write_text(JAVA)
    subprocess.run(["javac", "-d", str(src), str(src / "Upper.java")], check=True)
    jar = tmp_path / "upper.jar"
    subprocess.run(["jar", "cf", str(jar), "-C", str(src), "Upper.class"], check=True)
    ctx = context(tmp_path)
    p = payload(ctx, "upper", "upper.jar", jar.read_bytes(), "jar", "Upper", inputs={"k": [1, 2]})
    jvm_handler.validate(p)
    out = jvm_handler.run(ctx, p)
    assert out["outputs"] == {"echo": {"k": [1, 2]}} and "reading" in out["log"]


def test_a_worker_runs_each_steps_own_artifact_version_of_a_module(tmp_path: Path) -> None:
    # One worker process, two versions of the same module name: every step imports its own version,
    # also when the worker goes back to a version it ran before.
    ctx = context(tmp_path)
    runs = [
        ("1.0", b"def value():\n    return {'v': 1}\n"),
        ("2.0", b"def value():\n    return {'v': 2}\n"),
        ("1.0", b"def value():\n    return {'v': 1}\n"),
    ]
    seen = []
    for version, code in runs:
        meta = artifact_store(ctx).put("same", version, "python", "same_mod.py", code, 0.0, "u1")
        p = {"run": "r@1", "step": "s", "entrypoint": "same_mod:value", "artifact": meta.to_json()}
        seen.append(python_handler.run(ctx, {**p, "sources": []})["outputs"]["v"])
    assert seen == [1, 2, 1]
