"""The core stays pure: no I/O, clock, randomness or transport imports; the submitter stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "swarm" / "core"
WORKFLOW = CORE.parent / "workflow"
# Logging too: what the core would log it records in its story (`swarm.core.story`), which the shell logs.
FORBIDDEN = {"asyncio", "time", "random", "socket", "aiomqtt", "zeroconf", "threading", "uuid", "logging"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "path", sorted([*CORE.glob("*.py"), *WORKFLOW.glob("*.py")]), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    bad = _imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_core_modules_exist() -> None:
    assert len(list(CORE.glob("*.py"))) >= 8


def test_submitting_a_wordcount_job_loads_only_what_it_uses(tmp_path: Path) -> None:
    """A CLI command is a fresh interpreter each time: numpy (about 50 ms) and zeroconf (15 ms) would be
    a fifth of its start. The submitter checks the app and plans the job without them, and a client
    told its broker never looks for one over mDNS. Nor does it load the workflow conditions or the
    election (20 ms together), which a submitter of a MapReduce job never uses."""
    text = tmp_path / "in.txt"
    text.write_bytes(b"a b c\n" * 1000)
    probe = f"""
import asyncio, sys
from pathlib import Path
import swarm.cli, swarm.mapreduce.submit, swarm.client
from swarm.config import load_config
from swarm.mapreduce.app import load_app, resolve_app
from swarm.mapreduce.plan import MapReduceSpec, build_job, check_and_sample, plan_splits
from swarm.runtime.identity import resolve_broker
argv = ["submit", "mapreduce", "--app", "wordcount", "--input", "x", "--reduces", "2", "--output", "o"]
swarm.cli._parser(argv).parse_args(argv)
spec = MapReduceSpec(resolve_app("wordcount"), (Path({str(text)!r}),), 2, {{}})
app = load_app(spec.app, spec.params)
splits = plan_splits(spec.inputs, 2048, app.record_size)
build_job("j", spec, splits, "http://127.0.0.1:1", check_and_sample(spec, app), None, token="t" * 32)
asyncio.run(resolve_broker(load_config(None, broker="mqtt://127.0.0.1:1883", cluster="c")))
unused = ("numpy", "zeroconf", "swarm.workflow", "swarm.core.jobs", "swarm.core.election")
print(sorted(m for m in unused if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "[]"
