"""MapReduce through real `swarm join` processes and a real mosquitto: every built-in app against a plain
sequential computation, exactly-once maps, and crashes of tasks and nodes."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.mapreduce.locality import machine_id
from swarm.runtime.jobaccess import JOBS_DIR, job_data_name
from tests.conftest import MosquittoServer
from tests.integration.mroutput import check_partitioned, read_outputs, split_per_file, word_counts
from tests.integration.nodes import Cluster, CommitObserver, running, swarm_cmd

pytestmark = pytest.mark.network

WORDS = ["alpha", "beta", "gamma", "delta", "don't", "x1", "Zeta", "über", "eta", "theta"]


@pytest.fixture(scope="module")
def trio(mosquitto_module: MosquittoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("mr")
    # Task code runs confined (an unprivileged user, a sandbox where bubblewrap works): a directory it
    # may write must be allowed by the node's owner, and writable by that user.
    shared = root / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    config = root / "node.toml"
    config.write_text(f"[tasks]\nallowed_paths = {json.dumps([str(shared)])}\n")
    with running(root, mosquitto_module, ["a", "b", "c"], 2, "--config", str(config)) as cluster:
        yield cluster


def _texts(tmp_path: Path, files: int = 4, words: int = 3000, seed: int = 1) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(files):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(words // 6)]
        path = tmp_path / f"doc{i}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _mapreduce(
    cluster: Cluster, app: str, inputs: list[Path], out: Path, reduces: int, *extra: str
) -> dict[str, object]:
    args = [
        "submit",
        "mapreduce",
        "--app",
        app,
        "--input",
        *map(str, inputs),
        "--reduces",
        str(reduces),
        "--output",
        str(out),
        "--wait",
        *extra,
    ]
    result = cluster.cli(*args, timeout=240)
    assert result.returncode == 0, result.stderr + cluster.logs()
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_wordcount_matches_a_sequential_count(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path)
    summary = _mapreduce(trio, "wordcount", inputs, tmp_path / "out", 3, *split_per_file(inputs))
    assert summary["maps"] == 4 and summary["reduces"] == 3
    # these nodes opened no path to tasks: every split and output went through the data servers
    assert summary["splits_read_locally"] == summary["outputs_written_locally"] == 0
    merged = check_partitioned(read_outputs(tmp_path / "out", 3))
    assert {k: int(v) for k, v in merged.items()} == word_counts(inputs)
    # Once the job is over, no node keeps its map outputs.
    kept = [node.data_dir / "data" / JOBS_DIR / job_data_name(str(summary["job_id"])) for node in trio.nodes]
    deadline = time.monotonic() + 10
    while any(path.exists() for path in kept):
        assert time.monotonic() < deadline, [str(path) for path in kept if path.exists()]
        time.sleep(0.05)


def test_nodes_on_the_submitters_machine_use_its_files_where_allowed(
    mosquitto_module: object, tmp_path: Path
) -> None:
    if machine_id() is None:
        pytest.skip("this machine keeps no machine id, so tasks never use the submitter's files")
    config = tmp_path / "node.toml"
    config.write_text(f"[tasks]\nallowed_paths = {json.dumps([str(tmp_path / 'job')])}\n")
    (tmp_path / "job").mkdir()
    inputs = _texts(tmp_path / "job")
    # Where the nodes may write the outputs themselves: allowed, and writable by the task user.
    (tmp_path / "job" / "out").mkdir(mode=0o777)
    (tmp_path / "job" / "out").chmod(0o777)
    cluster = Cluster(tmp_path / "nodes", mosquitto_module, cluster="local")
    try:
        for name in ("a", "b"):
            cluster.start(name, "--slots", "2", "--config", str(config))
        cluster.wait_ready(alive=2)
        summary = _mapreduce(
            cluster, "wordcount", inputs, tmp_path / "job" / "out", 2, *split_per_file(inputs)
        )
        assert summary["splits_read_locally"] == 4 and summary["outputs_written_locally"] == 2
        merged = check_partitioned(read_outputs(tmp_path / "job" / "out", 2))
        assert {k: int(v) for k, v in merged.items()} == word_counts(inputs)
        # an output directory the nodes may not write to: the outputs are uploaded instead
        summary = _mapreduce(cluster, "wordcount", inputs, tmp_path / "elsewhere", 2)
        assert (
            summary["maps"] == summary["splits_read_locally"] == 1 and summary["outputs_written_locally"] == 0
        )
        assert check_partitioned(read_outputs(tmp_path / "elsewhere", 2)) == merged
    finally:
        cluster.stop_all()


def test_indexer_matches_a_sequential_index(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path, files=3, seed=2)
    _mapreduce(trio, "indexer", inputs, tmp_path / "out", 2)
    merged = check_partitioned(read_outputs(tmp_path / "out", 2))
    docs: dict[str, set[str]] = collections.defaultdict(set)
    for p in inputs:
        for w in re.findall(rb"[a-z0-9']+", p.read_bytes().lower()):
            docs[w.decode()].add(p.name)
    assert merged == {w: f"{len(d)} {','.join(sorted(d))}" for w, d in docs.items()}


def test_grep_finds_exactly_the_matching_lines(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path, files=2, seed=3)
    _mapreduce(trio, "grep", inputs, tmp_path / "out", 2, "--param", "pattern=gam+a d")
    merged = check_partitioned(read_outputs(tmp_path / "out", 2))
    expected = {
        f"{p.name}:{n:010d}": line
        for p in inputs
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if re.search("gam+a d", line)
    }
    assert merged == expected and expected


def test_sort_outputs_concatenate_to_the_sorted_records(trio: Cluster, tmp_path: Path) -> None:
    rng = random.Random(4)
    records = [bytes(rng.randrange(32, 127) for _ in range(10)) + b"x" * 88 + b"\r\n" for _ in range(6000)]
    inputs = []
    for i in range(3):
        path = tmp_path / f"recs{i}"
        path.write_bytes(b"".join(records[i * 2000 : (i + 1) * 2000]))
        inputs.append(path)
    _mapreduce(trio, "sort", inputs, tmp_path / "out", 4)
    joined = b"".join((tmp_path / "out" / f"mr-out-{r}").read_bytes() for r in range(4))
    got = [joined[i : i + 100] for i in range(0, len(joined), 100)]
    assert len(got) == len(records)
    assert [g[:10] for g in got] == sorted(r[:10] for r in records)
    assert sorted(got) == sorted(records)


def test_groupby_aggregates_like_a_sequential_pass(trio: Cluster, tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = [(rng.choice(["north", "south", "east", "west"]), rng.randint(1, 100) / 4) for _ in range(5000)]
    path = tmp_path / "sales.csv"
    path.write_text("region,amount\n" + "".join(f"{k},{v}\n" for k, v in rows))
    for agg in ("sum", "mean", "max"):
        out = tmp_path / f"out-{agg}"
        _mapreduce(trio, "groupby", [path], out, 2, "--param", "header=1", "--param", f"agg={agg}")
        merged = check_partitioned(read_outputs(out, 2))
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for k, v in rows:
            groups[k].append(v)
        reduce = {"sum": sum, "mean": lambda xs: sum(xs) / len(xs), "max": max}[agg]
        assert {k: float(v) for k, v in merged.items()} == pytest.approx(
            {k: reduce(v) for k, v in groups.items()}
        )


MARKER_APP = """
import os

def map(filename, contents):
    with open(os.path.join({marks!r}, filename + ".runs"), "a") as f:
        f.write("x")
    for word in contents.split():
        yield word, "1"

def reduce(key, values):
    return str(len(values))
"""


def test_each_map_runs_exactly_once_when_nothing_fails(trio: Cluster, tmp_path: Path) -> None:
    marks = trio.root / "shared" / "marks"
    marks.mkdir(mode=0o777)
    marks.chmod(0o777)
    app = tmp_path / "marker.py"
    app.write_text(MARKER_APP.replace("{marks!r}", repr(str(marks))))
    inputs = _texts(tmp_path, files=5, seed=6)
    _mapreduce(trio, str(app), inputs, tmp_path / "out", 2)
    assert {p.name: p.read_text() for p in marks.iterdir()} == {f"{p.name}.runs": "x" for p in inputs}


CHAOS_APP = """
import os, random, time

_struck = set()


def _chaos():
    # Once per attempt: a third of attempts kill their process, a third stall for up to 10 s. The
    # attempt draws its fate from its task (`<job id>.m3`, the job id left out) and number, so every run
    # of the test meets the same chaos.
    attempt = (os.environ["SWARM_TASK_ID"], os.environ["SWARM_ATTEMPT"])
    if attempt in _struck:
        return
    _struck.add(attempt)
    fate = random.Random(attempt[0].rsplit(".", 1)[-1] + ":" + attempt[1])
    roll = fate.random()
    if roll < 1 / 3:
        os._exit(17)
    if roll < 2 / 3:
        time.sleep(fate.uniform(0, 10))


def map(filename, contents):
    _chaos()
    for word in contents.split():
        yield word, "1"


def reduce(key, values):
    _chaos()
    return str(len(values))
"""


def test_crashing_and_stalling_tasks_still_give_the_crash_free_output(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path, files=3, seed=7)
    twin = tmp_path / "twin.py"
    twin.write_text(
        "def map(filename, contents):\n    for w in contents.split():\n        yield w, '1'\n\n"
        "def reduce(key, values):\n    return str(len(values))\n"
    )
    chaos = tmp_path / "chaos.py"
    chaos.write_text(CHAOS_APP)
    _mapreduce(trio, str(twin), inputs, tmp_path / "calm", 2)
    _mapreduce(trio, str(chaos), inputs, tmp_path / "chaos", 2, "--timeout", "4", "--max-retries", "30")
    for r in range(2):
        assert (tmp_path / "chaos" / f"mr-out-{r}").read_bytes() == (
            tmp_path / "calm" / f"mr-out-{r}"
        ).read_bytes()


SLOW_APP = """
import time

def map(filename, contents):
    time.sleep({map_sleep})
    for word in contents.split():
        yield word, "1"

def reduce(key, values):
    time.sleep({reduce_sleep})
    return str(len(values))
"""


@pytest.mark.parametrize("phase", ["map", "reduce"])
def test_sigkill_of_a_node_during_a_phase_keeps_the_output_exact(
    mosquitto: object, tmp_path: Path, phase: str
) -> None:
    inputs = _texts(tmp_path, files=6, words=600, seed=8)
    app = tmp_path / "slow.py"
    app.write_text(
        SLOW_APP.format(
            map_sleep=1.5 if phase == "map" else 0, reduce_sleep=0.002 if phase == "reduce" else 0
        )
    )
    expected = _word_counts_split(inputs)
    with running(tmp_path / "nodes", mosquitto, ["a", "b", "c"]) as cluster:
        asyncio.run(_kill_during(cluster, app, inputs, tmp_path / "out", phase))
    merged = check_partitioned(read_outputs(tmp_path / "out", 3))
    assert {k: int(v) for k, v in merged.items()} == expected


def _word_counts_split(paths: list[Path]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for p in paths:
        counts.update(p.read_text().split())
    return dict(counts)


async def _kill_during(cluster: Cluster, app: Path, inputs: list[Path], out: Path, phase: str) -> None:
    observer = CommitObserver(cluster)
    watch = asyncio.create_task(observer.run())
    await observer.ready.wait()
    coordinator = cluster.status()["coordinator"]
    args = [
        "submit",
        "mapreduce",
        "--app",
        str(app),
        "--input",
        *map(str, inputs),
        "--reduces",
        "3",
        "--output",
        str(out),
        "--cluster",
        cluster.cluster,
        "--broker",
        str(cluster.broker),
        *split_per_file(inputs),
    ]
    proc = subprocess.Popen(
        swarm_cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env(),
    )
    try:
        deadline = time.monotonic() + 60
        maps_done = lambda: sum(1 for t in observer.counts if ".m" in t)  # noqa: E731
        while (maps_done() < 2) if phase == "map" else (maps_done() < len(inputs)):
            assert time.monotonic() < deadline and proc.poll() is None, cluster.logs()
            await asyncio.sleep(0.05)
        cluster.by_id(coordinator).kill()  # the coordinator, which also runs tasks
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=180)
    finally:
        watch.cancel()
    assert proc.returncode == 0, stderr + cluster.logs()
    assert all(n == 1 for n in observer.counts.values()), observer.counts


def test_bad_jobs_are_refused_before_any_task_starts(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path, files=1)
    no_reduce = tmp_path / "noreduce.py"
    no_reduce.write_text("def map(filename, contents):\n    yield 'a', '1'\n")
    int_keys = tmp_path / "intkeys.py"
    int_keys.write_text(
        "def map(filename, contents):\n    yield 1, '1'\n\ndef reduce(k, v):\n    return '1'\n"
    )
    cases = [
        (["--app", "wordcount", "--input", str(tmp_path / "missing.txt"), "--reduces", "2"], "not found"),
        (["--app", str(no_reduce), "--input", str(inputs[0]), "--reduces", "2"], "no reduce"),
        (["--app", "wordcount", "--input", str(inputs[0]), "--reduces", "0"], "at least 1"),
        (["--app", "nosuchapp", "--input", str(inputs[0]), "--reduces", "1"], "no app"),
    ]
    for args, needle in cases:
        result = trio.cli("submit", "mapreduce", *args, "--output", str(tmp_path / "o"), timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_map_with_non_string_keys_fails_at_once_with_a_clear_error(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path, files=1)
    int_keys = tmp_path / "intkeys.py"
    int_keys.write_text(
        "def map(filename, contents):\n    yield 1, '1'\n\ndef reduce(k, v):\n    return '1'\n"
    )
    result = trio.cli(
        "submit",
        "mapreduce",
        "--app",
        str(int_keys),
        "--input",
        str(inputs[0]),
        "--reduces",
        "1",
        "--output",
        str(tmp_path / "o"),
        timeout=120,
    )
    assert result.returncode == 1
    assert "must yield string keys and values, got (int, str)" in result.stderr


def test_a_map_that_raises_fails_the_job_with_its_traceback(trio: Cluster, tmp_path: Path) -> None:
    inputs = _texts(tmp_path, files=2)
    boom = tmp_path / "boom.py"
    boom.write_text(
        "def map(filename, contents):\n    if filename == 'doc1.txt':\n        raise RuntimeError('kaboom')\n"
        "    yield 'a', '1'\n\ndef reduce(k, v):\n    return '1'\n"
    )
    result = trio.cli(
        "submit",
        "mapreduce",
        "--app",
        str(boom),
        "--input",
        *map(str, inputs),
        "--reduces",
        "1",
        "--output",
        str(tmp_path / "o"),
        "--max-retries",
        "0",
        "--job-id",
        "job-kaboom",
        timeout=120,
    )
    assert result.returncode == 1
    # The client shows the error's first line; the traceback is in the job's record (issue 14, item 5).
    assert "kaboom" in result.stderr and "Traceback" not in result.stderr
    record = json.loads(trio.cli("result", "job-kaboom", "--json").stdout)
    failed = [t for t in record["tasks"] if t["state"] == "failed"]
    assert failed and "kaboom" in failed[0]["error"] and "Traceback" in failed[0]["error"]
