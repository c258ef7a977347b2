"""The fault registry: scenario files name kinds, each kind checks its own keys, applies and undoes itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from swarm.errors import ConfigError
from swarm.sim.faults import FAULTS, Crash, NodeFault, Partition, ScheduledFault, Slow, register
from swarm.sim.runner import run_scenario
from swarm.sim.scenario import load_scenario
from swarm.sim.scenarios import sim_config
from swarm.sim.simnode import SimNode
from swarm.sim.world import SimWorld

HEAD = '[[devices]]\nprofile = "pi"\ncount = 3\n[[workload]]\nat = 1.0\ntasks = 20\n[[faults]]\nat = 2.0\n'


def _load(tmp_path: Path, fault: str) -> tuple[ScheduledFault, ...]:
    path = tmp_path / "faults.toml"
    path.write_text(HEAD + fault + "\n")
    return load_scenario(path).faults


def test_a_fault_table_becomes_its_kind_with_its_own_keys(tmp_path: Path) -> None:
    (s,) = _load(tmp_path, 'kind = "partition"\ntarget = "coordinator"\nmode = "out"\nduration = 3.0')
    assert s == ScheduledFault(2.0, Partition(mode="out"), "coordinator", 3.0)
    (s,) = _load(tmp_path, 'kind = "broker-restart"')
    assert s.lasts == 1.0, "a broker restart without a duration is down for a second"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ('kind = "meteor"', "kind must be one of .*crash.*partition"),
        ('kind = "crash"\nmode = "out"', "faults\\[0\\].mode does not apply to kind = 'crash'"),
        ('kind = "crash"\nkeep_dsk = false', "unknown key faults\\[0\\].keep_dsk"),
        ('kind = "network"\ntarget = "coordinator"', "target does not apply to kind = 'network'"),
        ('kind = "partition"\nmode = "sideways"', "mode must be one of cut, out, in"),
        ('kind = "load"', "factor is required"),
        ('kind = "load"\nfactor = 2.0', "factor must be in \\[0, 1\\)"),
        ('kind = "network"\ndrop = 1.5', "drop must be in \\[0, 1\\]"),
        ('kind = "slow"\nfactor = true', "factor must be a number"),
    ],
)
def test_bad_fault_tables_are_refused(tmp_path: Path, fault: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        _load(tmp_path, fault)


def test_each_node_fault_is_undone() -> None:
    world = SimWorld(0, sim_config())
    node = world.add_node("n0")
    for fault, broken in (
        (Crash(), lambda n: not n.up),
        (Partition(mode="cut"), lambda n: n.link == "cut" and not n.connected),
        (Slow(factor=3.0), lambda n: n.slow == 3.0),
    ):
        fault.apply(world, node)
        assert broken(node), fault
        fault.undo(world, node)
        world.run_until(world.now + 5.0)
        assert node.up and node.connected and node.link is None and node.slow == 1.0, fault


@dataclass(frozen=True, slots=True)
class _Freeze(NodeFault):
    """A fault defined outside the registry's module: one class is all it takes."""

    name: ClassVar[str] = "freeze"
    summary: ClassVar[str] = "stop the node's tasks"
    factor: float = 1000.0

    def apply(self, world: SimWorld, node: SimNode) -> None:
        world.set_slow(node.node_id, self.factor)

    def undo(self, world: SimWorld, node: SimNode) -> None:
        world.set_slow(node.node_id, 1.0)


def test_a_new_kind_is_one_registered_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAULTS, "freeze", _Freeze)
    (s,) = _load(tmp_path, 'kind = "freeze"\ntarget = "pi-0001"\nduration = 4.0\nfactor = 50.0')
    assert s.fault == _Freeze(50.0)
    path = tmp_path / "faults.toml"
    report = run_scenario(load_scenario(path), 0)
    assert report.fault_kinds == {"freeze": 1} and report.completed == 20
    with pytest.raises(ValueError, match="registered twice"):
        register(_Freeze)
