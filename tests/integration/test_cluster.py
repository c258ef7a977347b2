"""Three real `swarm join` processes against a real mosquitto: throughput of the CLI, and crashes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster, CommitObserver, running, swarm_cmd

pytestmark = pytest.mark.network


@pytest.fixture
def cluster(mosquitto: object, tmp_path: Path) -> Iterator[Cluster]:
    with running(tmp_path, mosquitto, ["node0", "node1", "node2"]) as c:
        yield c


def _batch(path: Path, n: int, task: dict[str, object]) -> Path:
    path.write_text(json.dumps({"kind": "batch", "tasks": [task] * n}))
    return path


def test_200_tasks_from_the_cli_all_complete(cluster: Cluster, tmp_path: Path) -> None:
    batch = _batch(tmp_path / "b.json", 200, {"type": "echo", "payload": {"n": 1}})
    out = cluster.cli("submit", "batch", str(batch), "--wait")
    assert out.returncode == 0, out.stderr + cluster.logs()
    result = json.loads(out.stdout)
    assert result["ok"] and len(result["tasks"]) == 200
    assert all(t["state"] == "done" and t["result"] == {"n": 1} for t in result["tasks"])


def _submit_in_background(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    full = [*args, "--cluster", cluster.cluster, "--broker", str(cluster.broker)]
    return subprocess.Popen(
        swarm_cmd(*full),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env(),
    )


async def _observe_until(observer: CommitObserver, condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def _node_running(cluster: Cluster, job_id: str) -> str:
    """The node that runs the job's task, once `swarm tasks` shows it running."""
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, cluster.logs()
        out = await asyncio.to_thread(cluster.cli, "tasks", "--json", "--job", job_id)
        rows = json.loads(out.stdout) if out.returncode == 0 else []
        node = next((r["node"] for r in rows if r["state"] == "running" and r["node"]), None)
        if node is not None:
            return str(node)
        await asyncio.sleep(0.1)


async def test_sigkill_coordinator_mid_run_every_task_completes_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    observer = CommitObserver(cluster)
    watch = asyncio.create_task(observer.run())
    await observer.ready.wait()
    coordinator = cluster.by_id(cluster.status()["coordinator"])
    batch = _batch(tmp_path / "b.json", 200, {"type": "sleep", "payload": {"seconds": 0.05}})
    submit = _submit_in_background(cluster, "submit", "batch", str(batch), "--wait")
    try:
        await _observe_until(observer, lambda: len(observer.counts) >= 40, 60)
        coordinator.kill()
        stdout, stderr = await asyncio.to_thread(submit.communicate, timeout=90)
    finally:
        watch.cancel()
    assert submit.returncode == 0, stderr + cluster.logs()
    result = json.loads(stdout)
    assert result["ok"] and len(result["tasks"]) == 200
    ids = {t["id"] for t in result["tasks"]}
    assert set(observer.counts) == ids
    assert all(n == 1 for n in observer.counts.values()), {k: v for k, v in observer.counts.items() if v > 1}
    assert observer.tracker.epoch >= 2


async def test_sigkill_node_running_long_task_finishes_elsewhere(cluster: Cluster) -> None:
    observer = CommitObserver(cluster)
    watch = asyncio.create_task(observer.run())
    await observer.ready.wait()
    submit = _submit_in_background(
        cluster, "submit", "task", "sleep", "--payload", '{"seconds": 4}', "--job-id", "long-1", "--wait"
    )
    try:
        victim_id = await _node_running(cluster, "long-1")
        cluster.by_id(victim_id).kill()
        stdout, stderr = await asyncio.to_thread(submit.communicate, timeout=60)
    finally:
        watch.cancel()
    assert submit.returncode == 0, stderr + cluster.logs()
    assert json.loads(stdout) == {"slept": 4}
    assert observer.counts == {"long-1.t0": 1}
    assert observer.nodes["long-1.t0"] not in (None, victim_id)


def test_failover_within_10s_and_a_submission_made_meanwhile_completes(cluster: Cluster) -> None:
    old = cluster.status()["coordinator"]
    cluster.by_id(old).kill()
    killed_at = time.monotonic()
    submit = _submit_in_background(
        cluster,
        "submit",
        "task",
        "echo",
        "--payload",
        '{"during": "election"}',
        "--job-id",
        "mid-election",
        "--wait",
    )
    new = None
    while new in (None, old):
        assert time.monotonic() - killed_at < 10.0, f"no new coordinator within 10 s\n{cluster.logs()}"
        new = cluster.status()["coordinator"]
    took = time.monotonic() - killed_at
    stdout, stderr = submit.communicate(timeout=60)
    assert submit.returncode == 0, stderr + cluster.logs()
    assert json.loads(stdout) == {"during": "election"}
    assert took < 10.0


async def test_sigterm_hands_running_work_back_at_once(cluster: Cluster) -> None:
    observer = CommitObserver(cluster)
    watch = asyncio.create_task(observer.run())
    await observer.ready.wait()
    coordinator = cluster.status()["coordinator"]
    submit = _submit_in_background(
        cluster,
        "submit",
        "task",
        "sleep",
        "--payload",
        '{"seconds": 6}',
        "--job-id",
        "handback-1",
        "--require",
        f"exclude={coordinator}",
        "--wait",
    )
    try:
        holder = await _node_running(cluster, "handback-1")
        node = cluster.by_id(holder)
        node.proc.send_signal(signal.SIGTERM)
        # Well before the task could end: leaving stops what runs instead of waiting for it (it took
        # about half a second here).
        assert await asyncio.to_thread(node.proc.wait, 4) == 0
        stdout, stderr = await asyncio.to_thread(submit.communicate, timeout=60)
    finally:
        watch.cancel()
    assert submit.returncode == 0, stderr + cluster.logs()
    assert json.loads(stdout) == {"slept": 6}
    assert observer.counts == {"handback-1.t0": 1}
    assert observer.nodes["handback-1.t0"] not in (None, holder)
    assert "left the cluster" in node.log.read_text()


def test_status_shows_members_that_heartbeat_seconds_apart_alive(mosquitto: object, tmp_path: Path) -> None:
    """A large cluster paces its heartbeats (2 s apart at 100 nodes); `swarm status` listens long enough
    for each member's next live heartbeat, by the interval the member states, instead of calling it
    suspect for having heard only its retained record."""
    config = tmp_path / "slow.toml"
    config.write_text("[timeouts]\nheartbeat_interval = 2.0\nfailure_timeout = 6.0\nelection_timeout = 8.0\n")
    with running(tmp_path, mosquitto, ["slow0", "slow1"], 1, "--config", str(config)) as c:  # type: ignore[arg-type]
        for _ in range(3):
            states = {n["name"]: n["state"] for n in c.status()["nodes"]}
            assert states == {"slow0": "alive", "slow1": "alive"}, states


def test_daily_quota_counts_survive_a_coordinator_failover(cluster: Cluster, tmp_path: Path) -> None:
    made = cluster.cli("token", "create", "--role", "submitter", "--team", "day")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    out = cluster.cli("quota", "set", "--team", "day", "tasks_per_day=3")
    assert out.returncode == 0, out.stderr
    time.sleep(1.0)  # the nodes on this machine read the authority's roster within a poll
    two = _batch(tmp_path / "two.json", 2, {"type": "echo"})
    out = cluster.cli("submit", "batch", str(two), "--wait", "--token", token, timeout=60)
    assert out.returncode == 0, out.stderr
    time.sleep(1.5)  # the coordinator's quota ledger goes out within a second of an admission
    old = cluster.status()["coordinator"]
    cluster.by_id(old).kill()
    deadline = time.monotonic() + 30
    while cluster.wait_ready(alive=2)["coordinator"] == old:
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.3)
    # The successor counts the two tasks its predecessor admitted today.
    out = cluster.cli("submit", "batch", str(two), "--wait", "--token", token, timeout=60)
    assert out.returncode != 0 and "quota: team 'day' may submit 3 tasks a day" in out.stderr, out
    out = cluster.cli("submit", "task", "echo", "--wait", "--token", token, timeout=60)
    assert out.returncode == 0, out.stderr
