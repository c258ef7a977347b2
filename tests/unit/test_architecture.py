"""The core stays pure: no I/O, clock, randomness or transport imports."""

from __future__ import annotations

import ast
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
