"""The fault registry: scenario files name kinds, each kind checks its own keys, applies and undoes itself."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from swarm import topics
from swarm.core.election import Election
from swarm.core.events import Publish
from swarm.errors import ConfigError
from swarm.messages import Claim
from swarm.sim.faults import FAULTS, Crash, NodeFault, Partition, ScheduledFault, Slow, register
from swarm.sim.runner import SimReport, run_scenario
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


# --- full disks ----------------------------------------------------------------------------------------

#: Seeds of the disk-full sweep with the on-disk check (test_scenarios.py sweeps 100 without it).
DISK_SEEDS = 50


def _claims_only_from_disk(world: SimWorld) -> None:
    """Every acting coordinator has the epoch it acts for on disk: it never claimed one it could forget."""

    def check(node: SimNode | None) -> None:
        if node is not None and node.up and node.machine.scheduler is not None:
            epoch = node.machine.scheduler.epoch
            assert node.disk.get("epoch", 0) >= epoch, f"{node.node_id} acts for epoch {epoch} off its disk"

    world.after_step.append(check)


def _disk_full_run(seed: int) -> SimReport:
    return run_scenario(load_scenario("disk-full"), seed, setup=_claims_only_from_disk)


def test_full_disks_withhold_claims_and_every_invariant_holds() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_disk_full_run, range(DISK_SEEDS)))
    for report in reports:
        assert report.completed == report.tasks and not report.outside_design, report.seed
        assert report.fault_kinds["disk-full"] >= 4 and report.refused_writes > 0, report.seed
    assert sum(r.withheld_claims > 0 for r in reports) >= DISK_SEEDS // 2, "claims are seldom withheld"


def test_a_claim_sent_without_its_epoch_on_disk_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above trips on a node that ignores its disk, as every node did before `PersistFailed`:
    its claims go out whatever the disk said, and it acts on the ones that win."""
    unguarded = Publish(topics.ELECTION, Claim(0), epoch=0, retain=True)
    monkeypatch.setattr(
        "swarm.core.election.claim_message",
        lambda epoch: dataclasses.replace(unguarded, body=Claim(epoch), epoch=epoch),
    )
    monkeypatch.setattr(Election, "on_persist_failed", lambda self, epoch: None)
    with pytest.raises(AssertionError, match="off its disk"):
        for seed in range(10):
            _disk_full_run(seed)
