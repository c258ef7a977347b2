"""Chaos with real processes: four `swarm join` nodes against a real mosquitto on loopback, one of them
SIGKILLed every few seconds (the coordinator first) and restarted with its data dir, while a MapReduce
wordcount and a 2,000-task batch run. Both must end with exactly the results of a quiet run: the output
files equal a sequential count, every task is committed once and done with its own result.

The victims and the pauses come from one seeded `random.Random` (`SWARM_CHAOS_SEED` replays another seed);
which node is coordinator at a given moment, and so what a kill hits, still depends on timing. The kills
stop when both jobs are over or after `CHAOS_S`, whichever is first; then the jobs have until `DEADLINE_S`
(from submission) to finish with every node up. The short form here takes well under two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from swarm.core.tracker import JobProgress
from tests.integration.mroutput import check_partitioned, read_outputs, word_counts
from tests.integration.nodes import Cluster, CommitObserver, Node, running, swarm_cmd

pytestmark = pytest.mark.network

SEED = int(os.environ.get("SWARM_CHAOS_SEED", "20240611"))
NAMES = ["n0", "n1", "n2", "n3"]
SLOTS = 2
BATCH_TASKS = 2000
INPUT_FILES = 6
INPUT_BYTES = 600_000  # per file: about 3.6 MB in all
SPLIT_SIZE = "256K"  # several maps per file
REDUCES = 3
KILL_EVERY_S = (3.0, 5.0)
RESTART_AFTER_S = (1.0, 2.0)
CHAOS_S = 40.0
DEADLINE_S = 100.0
MR_JOB = "chaos-mr"
BATCH_JOB = "chaos-batch"


@pytest.fixture
def cluster(mosquitto: object, tmp_path: Path) -> Iterator[Cluster]:
    with running(tmp_path / "nodes", mosquitto, NAMES, slots=SLOTS) as c:
        yield c


# --- the work and its expected results ---------------------------------------------------------------


def _texts(root: Path, rng: random.Random) -> list[Path]:
    """Text files of mixed-case words, digits, apostrophes, punctuation and non-ASCII letters."""
    alphabet = "abcdefghijklmnopqrstuvwxyz" * 3 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'"
    vocab = ["".join(rng.choices(alphabet, k=rng.randint(1, 10))) for _ in range(4000)]
    vocab += ["über", "naïve", "don't", "x-ray", "e.g.", "end.", "(aside)", "Zeta,", "ĉu"]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]  # roughly Zipf: a few frequent words
    root.mkdir()
    paths = []
    for i in range(INPUT_FILES):
        words = rng.choices(vocab, weights=weights, k=INPUT_BYTES // 6)
        lines, start = [], 0
        while start < len(words):
            end = start + rng.randint(1, 15)
            lines.append(" ".join(words[start:end]))
            start = end
        path = root / f"doc{i}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _mapreduce_output(out: Path) -> dict[str, int]:
    """Every `mr-out-<r>`: sorted, each key in its hash partition and in one file only."""
    return {key: int(value) for key, value in check_partitioned(read_outputs(out, REDUCES)).items()}


def _batch(path: Path) -> dict[str, object]:
    """2,000 quick tasks, each with a result of its own: echoes of their index and short sleeps."""
    tasks: list[dict[str, object]] = []
    expected: dict[str, object] = {}
    for k in range(BATCH_TASKS):
        if k % 4 == 0:
            task: dict[str, object] = {"id": f"t{k}", "type": "echo", "payload": {"k": k}}
            expected[f"{BATCH_JOB}.t{k}"] = {"k": k}
        else:
            seconds = round(0.02 + 0.01 * (k % 7), 2)
            task = {"id": f"t{k}", "type": "sleep", "payload": {"seconds": seconds}}
            expected[f"{BATCH_JOB}.t{k}"] = {"slept": seconds}
        tasks.append(task)
    # Low priority, so that the MapReduce's tasks are placed first and its phases meet the kills. Every
    # kill costs attempts, hence the retries; a timeout bounds how long an attempt that vanished without a
    # trace (its result or assignment lost with a process) can hold the job up.
    defaults = {"priority": "low", "max_retries": 30, "timeout": 10}
    path.write_text(json.dumps({"kind": "batch", "defaults": defaults, "tasks": tasks}))
    return expected


# --- the chaos ----------------------------------------------------------------------------------------


@dataclass
class Submission:
    """A `swarm submit ... --wait` running in the background, its output in files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def tail(self) -> str:
        return f"--- {self.name} stderr\n" + self.stderr.read_text(errors="replace")[-2000:]


def _submit(cluster: Cluster, name: str, *args: str) -> Submission:
    full = [*args, "--cluster", cluster.cluster, "--broker", str(cluster.broker), "--wait"]
    stdout, stderr = cluster.root / f"{name}.out", cluster.root / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:  # files, not pipes: --wait prints a lot
        proc = subprocess.Popen(swarm_cmd(*full), stdout=out, stderr=err, env=cluster.env())
    return Submission(name, proc, stdout, stderr)


def _processes_of(node: Node) -> list[psutil.Process]:
    """The node's descendants: its fork server, resource tracker, and worker processes with their tasks."""
    try:
        return psutil.Process(node.proc.pid).children(recursive=True)
    except psutil.Error:
        return []


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return str(process.pid)


@dataclass
class Chaos:
    """Kills a node every few seconds and restarts it a moment later, and says what it did."""

    cluster: Cluster
    observer: CommitObserver
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    story: list[str] = field(default_factory=list)
    kills: list[tuple[str, bool]] = field(default_factory=list)  # (name, was the coordinator)
    survivors: list[str] = field(default_factory=list)  # processes that outlived their killed node

    def note(self, what: str) -> None:
        self.story.append(f"{time.monotonic() - self.started:6.1f}s  {what}")

    def coordinator(self) -> Node | None:
        coordinator = self.observer.tracker.coordinator
        return next((n for n in self.cluster.nodes if coordinator and n.node_id == coordinator), None)

    async def run(self, until: float, over: asyncio.Event) -> None:
        """Kill the coordinator first, then whoever the seeded RNG picks."""
        victim = self.coordinator()
        assert victim is not None, "no coordinator to kill"
        while time.monotonic() < until and not over.is_set():
            if victim is None:
                victim = self.rng.choice(self.cluster.nodes)
            current = self.coordinator()
            was_coordinator = current is not None and current.name == victim.name
            processes = _processes_of(victim)
            victim.kill()
            self.kills.append((victim.name, was_coordinator))
            self.note(f"SIGKILL {victim.name}{' (coordinator)' if was_coordinator else ''}")
            await asyncio.sleep(self.rng.uniform(*RESTART_AFTER_S))
            # A task of the dead node must not run on unseen (its attempt is retried elsewhere).
            self.survivors += [f"{victim.name}: {_describe(p)}" for p in processes if _running(p)]
            self.cluster.restart(victim)
            self.note(f"restart {victim.name}")
            victim = None
            pause = self.rng.uniform(*KILL_EVERY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), pause)


# --- the test -----------------------------------------------------------------------------------------


def _submit_both(cluster: Cluster, inputs: list[Path], out: Path, batch_file: Path) -> list[Submission]:
    mr = _submit(
        cluster,
        "mapreduce",
        *("submit", "mapreduce", "--app", "wordcount", "--input", *map(str, inputs)),
        *("--split-size", SPLIT_SIZE, "--reduces", str(REDUCES), "--output", str(out)),
        *("--max-retries", "30", "--timeout", "30", "--job-id", MR_JOB),
    )
    batch = _submit(cluster, "batch", "submit", "batch", str(batch_file), "--job-id", BATCH_JOB)
    return [mr, batch]


def _progress(mr: JobProgress, batch: JobProgress) -> str:
    maps = sum(1 for t in mr.updates if t.startswith(f"{MR_JOB}.m"))
    reduces = len(mr.updates) - maps
    return f"committed: maps {maps}, reduces {reduces}/{REDUCES}, batch {len(batch.updates)}/{BATCH_TASKS}"


async def _jobs_under_chaos(chaos: Chaos, submissions: list[Submission], context: Callable[[], str]) -> None:
    """Start killing once the MapReduce is under way; stop when both jobs are over."""
    tracker = chaos.observer.tracker
    mr, batch = tracker.jobs[MR_JOB], tracker.jobs[BATCH_JOB]
    while not any(t.startswith(f"{MR_JOB}.m") for t in mr.updates):  # a map committed
        assert time.monotonic() - chaos.started < 30, "no map committed\n" + context()
        assert all(s.proc.poll() is None for s in submissions), context()
        await asyncio.sleep(0.02)
    over = asyncio.Event()
    killer = asyncio.create_task(chaos.run(chaos.started + CHAOS_S, over))
    shown, shown_at = "", 0.0
    try:
        while any(s.proc.poll() is None for s in submissions):
            assert time.monotonic() - chaos.started < DEADLINE_S, "jobs not finished\n" + context()
            assert not killer.done() or killer.exception() is None, context()
            if (now := _progress(mr, batch)) != shown and time.monotonic() - shown_at >= 1.0:
                chaos.note(shown := now)
                shown_at = time.monotonic()
            await asyncio.sleep(0.1)
        chaos.note("both jobs over")
        over.set()
        await killer
        await asyncio.sleep(0.5)  # the observer sees the last commits
    finally:
        killer.cancel()
        for s in submissions:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()


async def test_sigkill_a_node_every_few_seconds_mapreduce_and_batch_stay_exact(
    cluster: Cluster, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    inputs = _texts(tmp_path / "in", rng)
    expected_counts = word_counts(inputs)
    expected_results = _batch(tmp_path / "batch.json")
    observer = CommitObserver(cluster)
    mr_progress = observer.tracker.track(MR_JOB, 0)  # its size is known once it is planned
    batch_progress = observer.tracker.track(BATCH_JOB, BATCH_TASKS)
    watch = asyncio.create_task(observer.run())
    await observer.ready.wait()
    chaos = Chaos(cluster, observer, rng)
    submissions = _submit_both(cluster, inputs, tmp_path / "out", tmp_path / "batch.json")
    mr, batch = submissions
    chaos.note("submitted both jobs")

    def context() -> str:
        waiting = sorted(set(expected_results) - set(batch_progress.updates), key=len)[:20]
        lines = [f"seed {SEED}", *chaos.story, f"batch tasks not committed (first 20): {waiting}"]
        return "\n".join([*lines, *(s.tail() for s in submissions), cluster.logs()])

    try:
        await _jobs_under_chaos(chaos, submissions, context)
    finally:
        watch.cancel()
    print("\n".join([f"seed {SEED}", *chaos.story]))
    assert chaos.kills and chaos.kills[0][1], "the first kill must hit the coordinator\n" + context()
    assert not chaos.survivors, f"processes outlived their SIGKILLed node: {chaos.survivors}"
    assert mr.proc.returncode == 0, context()
    assert batch.proc.returncode == 0, context()

    # MapReduce: the outputs are exactly the sequential count.
    summary = json.loads(mr.stdout.read_text())
    assert summary["reduces"] == REDUCES and summary["maps"] > len(inputs)
    assert _mapreduce_output(tmp_path / "out") == expected_counts

    # The batch: every task done, with its own result.
    result = json.loads(batch.stdout.read_text())
    assert result["ok"], context()
    got = {t["id"]: (t["state"], t["result"]) for t in result["tasks"]}
    assert got == {task_id: ("done", value) for task_id, value in expected_results.items()}

    # The log of commits, through the same epoch gate as a submitter: each task committed once, done.
    mr_tasks = {f"{MR_JOB}.m{i}" for i in range(summary["maps"])} | {f"{MR_JOB}.r{r}" for r in range(REDUCES)}
    assert set(mr_progress.updates) == mr_tasks
    assert set(batch_progress.updates) == set(expected_results)
    assert all(u.state == "done" for u in [*mr_progress.updates.values(), *batch_progress.updates.values()])
    assert all(u.result == expected_results[t] for t, u in batch_progress.updates.items())
    assert batch_progress.duplicates == 0 and mr_progress.duplicates == 0
    twice = {task: n for task, n in observer.counts.items() if n != 1}
    assert not twice, f"committed more than once: {twice}\n" + context()
    assert set(observer.counts) == set(expected_results) | mr_tasks
    assert observer.tracker.epoch >= 2

    # Every killed node came back under its own id: the cluster is whole again.
    ids = {n.node_id for n in cluster.nodes}
    assert len(ids) == len(NAMES) and None not in ids
    status = cluster.wait_ready(alive=len(NAMES))
    assert {n["id"] for n in status["nodes"] if n["state"] == "alive"} == ids, status
