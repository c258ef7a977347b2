"""DAG benchmark: swarm's workflow layer against Dask (delayed graphs) and Prefect (a local flow).

What it measures, all in one run so the figures share the machine and its load:

1. Define + validate of a layered DAG of 1,000 and of 10,000 trivial PYTHON steps (layers of 100,
   each step with 1 to 3 random parents in the layer before): the `POST /api/v1/dag/define` call as a
   client sees it (encode, HTTP, parse, contract check, analysis, publish, store), and separately the
   pure part in this process (`parse_definition` + `validate` + `analyze_flow`, as the node runs them).
   Dask's figure is building the same `dask.delayed` graph (flattening it is left to `compute`, inside
   its end-to-end figure); Prefect has no define step (its graph is discovered while the flow runs).
2. End to end: the 1,000-step DAG from the run request to the run's final event (swarm: `POST
   .../runs` until the `run` event with a final state arrives on the WebSocket stream `/api/v1/stream`).
3. Dependency-satisfied-to-start latency along a 100-step chain: for each consecutive pair, the start
   of step i+1 minus the finish of step i, as the executor reports them (swarm: `startedAt` and
   `finishedAt` of the node executions in `GET /api/v1/runs/{id}`, taken by the executor around the
   step function; peers: `time.time()` at the start and end of the step function itself); p50 and p99.
4. `--concurrent` runs (default 100) of a 50-step layered DAG (5 layers of 10) started at once, each
   step sleeping `--step-ms` (default 20 ms; a sleeping step keeps its slot busy without taking a core
   from the scheduler, so this measures scheduling, not CPU contention). Utilisation = the sum of the
   steps' busy time (finish - start) / (slots x wall time), wall time from the first run request to the
   last run's end.

Swarm runs on a SwarmCluster (a secured mosquitto and two `swarm join` nodes on loopback, each with
as many slots as the machine has cores), the steps in an artifact pushed through the API. Dask runs on
a LocalCluster of 2 worker processes x cores threads (the same slot count); Prefect (3.x) runs a local
flow with a ThreadPoolTaskRunner of 2 x cores threads, in a separate interpreter (`--prefect-python`,
by default this one when it can import prefect) so that its server and settings stay out of this
process. Airflow is not measured (`--airflow` says why). A peer that is not installed or fails is
reported as "not measured: <reason>".

Goals (printed met/MISSED): define+validate of 1,000 steps < 1 s and of 10,000 < 5 s; p99
dependency-to-start < 50 ms (the seed's bound: < 500 ms); the concurrent runs with utilisation > 75%;
ahead of every peer measured.

Usage (from the repository root)::

    python bench/dags.py                       # the full run
    python bench/dags.py --quick               # a smoke run (100 steps, 10 concurrent runs), < 60 s
    python bench/dags.py --skip prefect --profile     # py-spy on the nodes while swarm runs

Everything runs on loopback; every process and temporary directory is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import logging
import math
import os
import pstats
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _cluster import (
    SwarmCluster,
    say,
    scratch_dir,
    sigterm_as_interrupt,
    start_profilers,
    stop_profilers,
    top_frames,
)

from swarm.workflow.analysis import StepEstimate, analyze_flow
from swarm.workflow.definition_parser import parse_definition
from swarm.workflow.model import DagDefinition
from swarm.workflow.validate import ClusterView, MemberView, validate

GOAL_DEFINE_1K_S = 1.0
GOAL_DEFINE_10K_S = 5.0
GOAL_P99_MS = 50.0
SEED_P99_MS = 500.0
GOAL_UTILISATION = 0.75
LAYER_WIDTH = 100
CHAIN = 100
SMALL_NODES, SMALL_WIDTH = 50, 10
ARTIFACT, ARTIFACT_VERSION = "dagbench-steps", "1.0"
FINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
# The analysis' default per-step estimate (the service's DEFAULT_STEP_SECONDS is private to it).
ESTIMATE_S = 60.0

Shape = list[tuple[str, list[str]]]  # (step id, its parents), parents first


# --- shapes and definitions ---------------------------------------------------------------------------------


def layered(nodes: int, width: int, rng: random.Random) -> Shape:
    """`nodes` steps in layers of `width`; each step after the first layer has 1-3 random parents in the
    layer before it."""
    shape: Shape = []
    previous: list[str] = []
    for layer in range(math.ceil(nodes / width)):
        current = [f"n{layer:03d}x{i:03d}" for i in range(min(width, nodes - layer * width))]
        for node in current:
            parents = sorted(rng.sample(previous, min(len(previous), rng.randint(1, 3)))) if previous else []
            shape.append((node, parents))
        previous = current
    return shape


def chain(nodes: int) -> Shape:
    """A chain of `nodes` steps, each the child of the one before."""
    return [(f"c{i:04d}", [f"c{i - 1:04d}"] if i else []) for i in range(nodes)]


def definition(dag_id: str, shape: Shape, entrypoint: str, version: str = "1.0.0") -> dict[str, Any]:
    """Seed 004's definition of `shape`, every step the artifact's `entrypoint` (no data on edges)."""
    task = {
        "artifactId": f"{ARTIFACT}-v{ARTIFACT_VERSION}",
        "entrypoint": entrypoint,
        "runtime": "PYTHON",
        "outputSchema": {"v": {"type": "INTEGER"}},
    }
    return {
        "dagId": dag_id,
        "name": dag_id,
        "version": version,
        "schedule": {"type": "MANUAL"},
        "nodes": [{"nodeId": node, "type": "TRANSFORM", "taskDefinition": task} for node, _ in shape],
        "edges": [{"from": parent, "to": node} for node, parents in shape for parent in parents],
    }


def steps_source(step_ms: float) -> str:
    """The artifact's module: `step` returns at once, `work` sleeps `step_ms` first."""
    return (
        "import time\n\n\n"
        "def step(**inputs):\n"
        '    return {"v": 1}\n\n\n'
        "def work(**inputs):\n"
        f"    time.sleep({step_ms / 1000!r})\n"
        '    return {"v": 1}\n'
    )


# --- results ------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One system's figures; None where not measured, `skipped` when nothing was."""

    system: str
    define_1k: float | None = None  # seconds
    define_10k: float | None = None
    pure_1k: float | None = None  # swarm: parse + validate + analyze in this process
    pure_10k: float | None = None
    e2e: float | None = None  # seconds for the layered DAG
    gaps_ms: list[float] = field(default_factory=list)
    concurrent_wall: float | None = None
    utilisation: float | None = None
    utilisation_steps: float | None = None  # busy / (slots x first step start .. last step finish)
    concurrent_runs: int = 0  # how many runs the two figures above are of
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1]


def chain_gaps_ms(spans: Sequence[tuple[float, float]]) -> list[float]:
    """start[i+1] - finish[i] in ms for spans in chain order."""
    return [(spans[i + 1][0] - spans[i][1]) * 1000.0 for i in range(len(spans) - 1)]


def utilisation(spans: Sequence[tuple[float, float]], slots: int, wall: float) -> float:
    """Busy time over slots x wall."""
    return sum(end - start for start, end in spans) / (slots * wall) if wall > 0 else 0.0


# --- swarm: the pure part in this process -------------------------------------------------------------------


def pure_define(body: dict[str, Any], cluster: ClusterView, slots: int) -> tuple[float, DagDefinition]:
    """Seconds to parse, validate and analyse `body` as the node's define does."""
    t0 = time.perf_counter()
    parsed = parse_definition(body)
    result = validate(parsed, {}, cluster, {})
    estimates = [StepEstimate(n.node_id, ESTIMATE_S) for n in parsed.nodes]
    analyze_flow(estimates, [(e.source, e.target) for e in parsed.edges], slots)
    seconds = time.perf_counter() - t0
    if not result.is_valid:
        raise RuntimeError(f"benchmark definition invalid: {result.to_json()['errors'][:3]}")
    return seconds, parsed


def pure_breakdown(body: dict[str, Any], cluster: ClusterView, slots: int) -> list[str]:
    """Seconds of each stage and cProfile's top functions of one more pure define (untimed)."""
    t0 = time.perf_counter()
    parsed = parse_definition(body)
    t1 = time.perf_counter()
    validate(parsed, {}, cluster, {})
    t2 = time.perf_counter()
    estimates = [StepEstimate(n.node_id, ESTIMATE_S) for n in parsed.nodes]
    analyze_flow(estimates, [(e.source, e.target) for e in parsed.edges], slots)
    t3 = time.perf_counter()
    lines = [
        f"  pure define of {len(body['nodes']):,} steps: parse {t1 - t0:.3f} s, validate {t2 - t1:.3f} s, "
        f"analyze {t3 - t2:.3f} s"
    ]
    profiler = cProfile.Profile()
    profiler.enable()
    pure_define(body, cluster, slots)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    rows = [
        r.split()
        for r in out.getvalue().splitlines()
        if r.strip()[:1].isdigit() and "function calls" not in r
    ]
    lines += ["  cProfile of it, by own time (calls, own s, cumulative s, function):"]
    lines += [f"    {row[0]:>8} {row[1]:>7} {row[3]:>7}  {_where(' '.join(row[5:]))}" for row in rows[:8]]
    return lines


def _where(function: str) -> str:
    """A cProfile location without the checkout's directory:
    'swarm/workflow/definition_parser.py:261(_parse_node)'."""
    for marker in ("/swarm/", "site-packages/"):
        if marker in function:
            return marker.lstrip("/") + function.split(marker, 1)[1]
    return function


# --- swarm through its HTTP API -----------------------------------------------------------------------------


class SwarmApi:
    """An aiohttp client of one node's API plus its event stream, which resolves runs as they end."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=600)
        )
        self.finals: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SwarmApi:
        ws = await self.session.ws_connect(f"{self.url}/api/v1/stream?token={self.token}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read(ws))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.session.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            if event.get("type") == "run" and event.get("state") in FINAL:
                future = self.finals.get(event["runId"])
                if future is not None and not future.done():
                    future.set_result((event["state"], time.perf_counter()))
        for future in self.finals.values():
            if not future.done():
                future.set_exception(RuntimeError("the event stream closed"))

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        """The JSON answer; RuntimeError for an error status."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if body is not None else {}
        async with self.session.request(
            method, self.url + "/api/v1" + path, data=data, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {text[:500]}")
            return json.loads(text or "null")

    async def start(self, dag_id: str, run_id: str) -> asyncio.Future[tuple[str, float]]:
        """Start a run; the future gives (final state, perf_counter when its end was seen)."""
        future: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        self.finals[run_id] = future
        await self.call("POST", f"/dags/{dag_id}/runs", {"params": {}, "runId": run_id})
        return future

    async def run(self, dag_id: str, run_id: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """Run a DAG: (seconds from the request to the end event, the run with its steps)."""
        t0 = time.perf_counter()
        future = await self.start(dag_id, run_id)
        state, seen = await asyncio.wait_for(future, timeout)
        run = await self.call("GET", f"/runs/{run_id}")
        if state != "SUCCESS":
            bad = [(n["nodeId"], n["state"], n["error"]) for n in run["nodes"] if n["state"] != "SUCCESS"]
            raise RuntimeError(f"run {run_id} ended {state}: {bad[:3]}")
        return seen - t0, run


def spans_of(run: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each step's (startedAt, finishedAt) of a run answered by GET /runs/{id}."""
    return {n["nodeId"]: (float(n["startedAt"]), float(n["finishedAt"])) for n in run["nodes"]}


class SwarmBench:
    """The swarm measurements on one running cluster."""

    def __init__(self, cluster: SwarmCluster, args: argparse.Namespace, rng: random.Random) -> None:
        self.cluster = cluster
        self.args = args
        self.rng = rng
        self.slots = cluster.slots * cluster.node_count
        status = cluster.status()
        self.url = str(status["api"])
        self.token = cluster.admin_credential().to_token()
        self.view = ClusterView(
            tuple(
                MemberView(n["id"], n["name"], os.cpu_count() or 1, 4096, 10.0, False, frozenset({"PYTHON"}))
                for n in status["nodes"]
            )
        )
        self._serial = 0

    def run_id(self, dag_id: str) -> str:
        """A fresh run id (the server's default has a 2-byte random part: 100 at once may collide)."""
        self._serial += 1
        return f"{dag_id}@bench-{os.getpid()}-{self._serial}"

    async def measure(self, fig: Figures, shapes: dict[str, Shape]) -> None:
        """Every swarm figure, into `fig`."""
        args = self.args
        async with SwarmApi(self.url, self.token) as api:
            await api.call(
                "PUT",
                f"/artifacts/{ARTIFACT}/{ARTIFACT_VERSION}?kind=python&filename=steps.py",
                raw=steps_source(args.step_ms).encode(),
            )
            for size in (args.nodes, args.big_nodes):
                body = definition(f"layers{size}", shapes[f"def{size}"], "steps:step")
                pure_define(body, self.view, self.slots)  # untimed: the first call pays for imports
                pure = [pure_define(body, self.view, self.slots)[0] for _ in range(args.repeat)]
                http = []
                for rep in range(args.repeat):
                    body["version"] = f"1.0.{rep}"
                    t0 = time.perf_counter()
                    answer = await api.call("POST", "/dag/define", body)
                    http.append(time.perf_counter() - t0)
                    if not answer["validationResults"]["isValid"]:
                        raise RuntimeError(f"define refused: {answer['validationResults']['errors'][:3]}")
                say(
                    f"  define {size:,} steps: HTTP {_series(http)} s; pure parse+validate+analyze "
                    f"{_series(pure)} s"
                )
                if size == args.nodes:
                    fig.define_1k, fig.pure_1k = _median(http), _median(pure)
                else:
                    fig.define_10k, fig.pure_10k = _median(http), _median(pure)
            await self._runs(api, fig, shapes)

    async def _runs(self, api: SwarmApi, fig: Figures, shapes: dict[str, Shape]) -> None:
        args = self.args
        for name, shape, entry in (
            ("e2e", shapes["e2e"], "steps:step"),
            ("chain", shapes["chain"], "steps:step"),
            ("small", shapes["small"], "steps:work"),
        ):
            await api.call("POST", "/dag/define", definition(f"bench-{name}", shape, entry))
        # Warm-up: the executors import the artifact once per worker.
        await api.run("bench-small", self.run_id("bench-small"), 120)
        best: float | None = None
        for _ in range(args.repeat):
            seconds, run = await api.run("bench-e2e", self.run_id("bench-e2e"), 600)
            best = seconds if best is None else min(best, seconds)
            say(f"  end to end, {len(shapes['e2e']):,} steps: {seconds:.2f} s")
        fig.e2e = best
        for _ in range(args.repeat):
            _, run = await api.run("bench-chain", self.run_id("bench-chain"), 600)
            spans = spans_of(run)
            fig.gaps_ms += chain_gaps_ms([spans[node] for node, _ in shapes["chain"]])
        p50, p99 = percentile(fig.gaps_ms, 50), percentile(fig.gaps_ms, 99)
        say(f"  chain gaps: p50 {_fmt(p50)} ms, p99 {_fmt(p99)} ms")
        t0 = time.perf_counter()
        futures = await asyncio.gather(
            *(api.start("bench-small", self.run_id("bench-small")) for _ in range(args.concurrent))
        )
        ends = await asyncio.wait_for(asyncio.gather(*futures), 1800)
        wall = max(seen for _, seen in ends) - t0
        states = [state for state, _ in ends]
        if any(state != "SUCCESS" for state in states):
            raise RuntimeError(f"concurrent runs ended {sorted(set(states))}")
        run_ids = list(api.finals)[-args.concurrent :]
        busy = [s for rid in run_ids for s in spans_of(await api.call("GET", f"/runs/{rid}")).values()]
        fig.concurrent_wall = wall
        fig.concurrent_runs = args.concurrent
        fig.utilisation = utilisation(busy, self.slots, wall)
        first, last = min(s for s, _ in busy), max(e for _, e in busy)
        fig.utilisation_steps = utilisation(busy, self.slots, last - first)
        say(
            f"  {args.concurrent} concurrent runs x {len(shapes['small'])} steps: {wall:.2f} s, "
            f"utilisation {fig.utilisation:.0%} ({fig.utilisation_steps:.0%} from first step to last)"
        )


def bench_swarm(
    root: Path, args: argparse.Namespace, shapes: dict[str, Shape], rng: random.Random
) -> Figures:
    """Start a cluster and take every swarm figure; with `--profile`, py-spy on the nodes meanwhile."""
    slots = os.cpu_count() or 1
    fig = Figures(f"swarm (2 nodes x {slots} slots)")
    say(f"swarm: starting mosquitto and 2 nodes x {slots} slots ...")
    with SwarmCluster(root / "swarm", slots) as cluster:
        bench = SwarmBench(cluster, args, rng)
        recorders = start_profilers(cluster.process_groups(), root / "profile") if args.profile else {}
        try:
            asyncio.run(bench.measure(fig, shapes))
        finally:
            profiles = stop_profilers(recorders)
        for label, path in profiles.items():
            samples, rows = top_frames(path, 14)
            if samples >= 20:
                fig.notes.append(f"py-spy, {label}: {samples} samples ({samples / 100:.1f} s on CPU)")
                fig.notes += [f"  {share:6.1%} self {incl:6.1%} incl  {name}" for name, share, incl in rows]
        for size in (args.nodes, args.big_nodes):
            body = definition(f"layers{size}", shapes[f"def{size}"], "steps:step")
            fig.notes += pure_breakdown(body, bench.view, bench.slots)
    return fig


# --- Dask ---------------------------------------------------------------------------------------------------


def dask_step(*parents: object) -> tuple[float, float]:
    """A trivial step: when it started and ended."""
    start = time.time()
    return start, time.time()


def dask_work(*parents: object, seconds: float = 0.0) -> tuple[float, float]:
    """A step that sleeps `seconds`."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def dask_graph(shape: Shape, function: Callable[..., tuple[float, float]], **kwargs: Any) -> dict[str, Any]:
    """The shape as `dask.delayed` objects, by step id."""
    from dask.delayed import delayed

    made: dict[str, Any] = {}
    for node, parents in shape:
        made[node] = delayed(function, pure=False, name=f"{node}-{random.getrandbits(64):x}")(
            *(made[p] for p in parents), **kwargs
        )
    return made


def dask_define(shape: Shape) -> float:
    """Seconds to build the `dask.delayed` graph (each call checks and tokenises its arguments).

    Materialising it is left to `compute` (counted end to end): the graph of 10,000 delayed objects,
    each a collection holding its ancestors' layers, takes minutes and gigabytes to flatten at once.
    """
    t0 = time.perf_counter()
    made = dask_graph(shape, dask_step)
    seconds = time.perf_counter() - t0
    if len(made) != len(shape):
        raise RuntimeError(f"dask graph has {len(made)} steps for {len(shape)}")
    return seconds


def bench_dask(args: argparse.Namespace, shapes: dict[str, Shape]) -> Figures:
    """The same DAGs on a Dask LocalCluster of 2 worker processes x cores threads."""
    threads = os.cpu_count() or 1
    fig = Figures(f"Dask delayed (2 procs x {threads} threads)")
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        fig.skipped = f"not measured: {exc} (pip install 'dask[distributed]')"
        return fig
    logging.getLogger("distributed").setLevel(logging.ERROR)
    dask_define(shapes["small"])  # untimed: the first graph pays for imports
    fig.define_1k = _median([dask_define(shapes[f"def{args.nodes}"]) for _ in range(args.repeat)])
    fig.define_10k = _median([dask_define(shapes[f"def{args.big_nodes}"]) for _ in range(args.repeat)])
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        client.gather(client.compute(list(dask_graph(shapes["small"], dask_step).values())))  # warm-up
        for _ in range(args.repeat):
            made = dask_graph(shapes["e2e"], dask_step)
            t0 = time.perf_counter()
            client.gather(client.compute(list(made.values())))
            seconds = time.perf_counter() - t0
            fig.e2e = seconds if fig.e2e is None else min(fig.e2e, seconds)
        for _ in range(args.repeat):
            made = dask_graph(shapes["chain"], dask_step)
            spans = client.gather(client.compute([made[node] for node, _ in shapes["chain"]]))
            fig.gaps_ms += chain_gaps_ms(spans)
        graphs = [
            list(dask_graph(shapes["small"], dask_work, seconds=args.step_ms / 1000).values())
            for _ in range(args.concurrent)
        ]
        t0 = time.perf_counter()
        futures = [client.compute(g) for g in graphs]
        results = [span for batch in client.gather(futures) for span in batch]
        fig.concurrent_wall = time.perf_counter() - t0
        fig.concurrent_runs = args.concurrent
    fig.utilisation = utilisation(results, 2 * threads, fig.concurrent_wall)
    first, last = min(s for s, _ in results), max(e for _, e in results)
    fig.utilisation_steps = utilisation(results, 2 * threads, last - first)
    return fig


# --- Prefect (in its own interpreter) -----------------------------------------------------------------------

PREFECT_PROGRAM = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

spec = json.loads(sys.stdin.read())

@task
def step(seconds=0.0):
    start = time.time()
    if seconds:
        time.sleep(seconds)
    return [start, time.time()]

@flow(task_runner=ThreadPoolTaskRunner(max_workers=spec["threads"]), log_prints=False)
def dag(shape, seconds=0.0):
    futures = {}
    for node, parents in shape:
        futures[node] = step.submit(seconds, wait_for=[futures[p] for p in parents])
    return [futures[node].result() for node, _ in shape]

out = {}
dag(spec["small"])  # warm-up: starts the local server
t0 = time.perf_counter(); dag(spec["e2e"]); out["e2e"] = time.perf_counter() - t0
out["chain"] = dag(spec["chain"])
if spec["concurrent"]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(spec["concurrent"]) as pool:
        runs = pool.map(lambda _: dag(spec["small"], spec["seconds"]), range(spec["concurrent"]))
        spans = [s for r in runs for s in r]
    out["wall"] = time.perf_counter() - t0
    out["spans"] = spans
print(json.dumps(out))
"""


def prefect_python(args: argparse.Namespace) -> str | None:
    """The interpreter to run Prefect with, or None when none has it."""
    if args.prefect_python:
        return str(args.prefect_python)
    return sys.executable if importlib.util.find_spec("prefect") is not None else None


def bench_prefect(root: Path, args: argparse.Namespace, shapes: dict[str, Shape]) -> Figures:
    """A local Prefect flow per DAG, tasks on a thread pool of 2 x cores threads, in a child interpreter."""
    threads = 2 * (os.cpu_count() or 1)
    fig = Figures(f"Prefect local flow ({threads} threads)")
    python = prefect_python(args)
    if python is None:
        fig.skipped = "not measured: prefect is not installed here (pip install prefect, or --prefect-python)"
        return fig
    home = root / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
        PREFECT_LOGGING_LEVEL="ERROR",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    env.pop("PREFECT_API_URL", None)
    spec = {
        "threads": threads,
        "small": shapes["small"],
        "e2e": shapes["e2e"],
        "chain": shapes["chain"],
        "concurrent": 0 if args.prefect_no_concurrent else min(args.concurrent, args.prefect_concurrent),
        "seconds": args.step_ms / 1000,
    }
    try:
        proc = subprocess.run(
            [python, "-c", PREFECT_PROGRAM],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            env=env,
            timeout=args.prefect_timeout,
            check=False,
            cwd=home,
        )
    except subprocess.TimeoutExpired:
        fig.skipped = f"not measured: did not finish within {args.prefect_timeout:.0f} s"
        return fig
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        fig.skipped = f"not measured: exited {proc.returncode}: {tail}"
        return fig
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    fig.e2e = float(out["e2e"])
    fig.gaps_ms = chain_gaps_ms([tuple(s) for s in out["chain"]])
    if "wall" in out:
        spans = [tuple(s) for s in out["spans"]]
        fig.concurrent_wall = float(out["wall"])
        fig.concurrent_runs = int(spec["concurrent"])
        if fig.concurrent_runs != args.concurrent:
            fig.notes.append(
                f"Prefect: {fig.concurrent_runs} concurrent flows, not {args.concurrent} "
                "(--prefect-concurrent; 100 take over ten minutes): its wall time is not comparable, its"
                " utilisation is"
            )
        fig.utilisation = utilisation(spans, threads, fig.concurrent_wall)
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        fig.utilisation_steps = utilisation(spans, threads, last - first)
    fig.notes.append("Prefect: no define step (the flow's graph is built while it runs); one e2e run")
    return fig


# --- report -------------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _series(values: Sequence[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def report(results: Sequence[Figures], args: argparse.Namespace, shapes: dict[str, Shape]) -> bool:
    """Print the table, swarm's ratio to each peer and the goals; True when every goal was met."""
    n, big = args.nodes, args.big_nodes
    cols: list[tuple[str, Callable[[Figures], str]]] = [
        (f"def {n:,} s", lambda f: _fmt(f.define_1k, ".3f")),
        (f"def {big:,} s", lambda f: _fmt(f.define_10k, ".3f")),
        (f"e2e {len(shapes['e2e']):,} s", lambda f: _fmt(f.e2e, ".2f")),
        ("gap p50 ms", lambda f: _fmt(percentile(f.gaps_ms, 50), ".2f")),
        ("gap p99 ms", lambda f: _fmt(percentile(f.gaps_ms, 99), ".2f")),
        (f"{args.concurrent}x{len(shapes['small'])} s", lambda f: _fmt(f.concurrent_wall, ".2f")),
        ("util", lambda f: _pct(f.utilisation)),
        ("util steps", lambda f: _pct(f.utilisation_steps)),
    ]
    width = max(len(r.system) for r in results) + 2
    say("")
    say(
        f"DAGs: layered {n:,} and {big:,} steps (layers of {args.width}), e2e on {len(shapes['e2e']):,}; "
        f"chain of {len(shapes['chain'])}; {args.concurrent} concurrent runs of {len(shapes['small'])} steps "
        f"sleeping {args.step_ms:g} ms; best/median of {args.repeat}"
    )
    say(f"{'system':<{width}}" + "".join(f"{title:>13}" for title, _ in cols))
    for r in results:
        if r.skipped:
            say(f"{r.system:<{width}}{r.skipped}")
            continue
        say(f"{r.system:<{width}}" + "".join(f"{get(r):>13}" for _, get in cols))
    swarm = next((r for r in results if r.system.startswith("swarm") and not r.skipped), None)
    if swarm is None:
        return False
    say(
        f"swarm pure parse+validate+analyze in this process: {n:,} steps {_fmt(swarm.pure_1k, '.3f')} s, "
        f"{big:,} steps {_fmt(swarm.pure_10k, '.3f')} s"
    )
    peers = [r for r in results if r is not swarm and not r.skipped]
    ahead = True
    for peer in peers:
        pairs = [
            (f"define {args.nodes:,}", swarm.define_1k, peer.define_1k, False),
            (f"define {args.big_nodes:,}", swarm.define_10k, peer.define_10k, False),
            ("e2e", swarm.e2e, peer.e2e, False),
            ("gap p99", percentile(swarm.gaps_ms, 99), percentile(peer.gaps_ms, 99), False),
            (
                "concurrent wall",
                swarm.concurrent_wall,
                peer.concurrent_wall if peer.concurrent_runs == swarm.concurrent_runs else None,
                False,
            ),
            ("utilisation", swarm.utilisation, peer.utilisation, True),
        ]
        parts = []
        for name, mine, theirs, higher_better in pairs:
            if mine is None or theirs is None or theirs <= 0 or mine <= 0:
                continue
            ratio = mine / theirs
            better = ratio >= 1 if higher_better else ratio <= 1
            ahead = ahead and better
            parts.append(f"{name} x{ratio:.3g} ({'ahead' if better else 'behind'})")
        say(f"  swarm vs {peer.system}: {', '.join(parts) or 'nothing comparable'} (ratios swarm/peer)")
    p99 = percentile(swarm.gaps_ms, 99)
    goals = [
        (f"define+validate {n:,} steps < {GOAL_DEFINE_1K_S:g} s", swarm.define_1k, GOAL_DEFINE_1K_S),
        (f"define+validate {big:,} steps < {GOAL_DEFINE_10K_S:g} s", swarm.define_10k, GOAL_DEFINE_10K_S),
        (f"p99 dependency-to-start < {GOAL_P99_MS:g} ms", p99, GOAL_P99_MS),
        (f"p99 dependency-to-start < {SEED_P99_MS:g} ms (seed)", p99, SEED_P99_MS),
    ]
    met_all = True
    say("goals:")
    for name, value, bound in goals:
        met = value is not None and value < bound
        met_all = met_all and met
        say(f"  {name}: {'met' if met else 'MISSED'} ({_fmt(value, '.3f')})")
    util_met = swarm.utilisation is not None and swarm.utilisation > GOAL_UTILISATION
    met_all = met_all and util_met
    say(
        f"  {args.concurrent} concurrent runs, utilisation > {GOAL_UTILISATION:.0%}: "
        f"{'met' if util_met else 'MISSED'} ({_pct(swarm.utilisation)})"
    )
    say(
        f"  ahead of every peer measured ({', '.join(p.system for p in peers) or 'none'}): "
        f"{'met' if ahead and peers else 'MISSED' if peers else '-'}"
    )
    say(f"  Airflow: {AIRFLOW_NOTE}")
    if args.quick:
        say("  (--quick: the sizes are not the goals' sizes; the verdicts are only indicative)")
    for r in results:
        for line in r.notes:
            say(line)
    return met_all and ahead


AIRFLOW_NOTE = (
    "not measured: apache-airflow 2/3 needs its own metadata database, scheduler and DAG-file "
    "processor (and pins dozens of packages that would replace this environment's); there is no "
    "in-process runner comparable to a local flow"
)


# --- main ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 100/1,000 steps, 10 concurrent runs")
    p.add_argument("--nodes", type=int, default=1000, help="steps of the layered DAG (default 1000)")
    p.add_argument("--big-nodes", type=int, default=10_000, help="steps of the big define (default 10000)")
    p.add_argument("--width", type=int, default=LAYER_WIDTH, help="steps per layer (default 100)")
    p.add_argument("--chain", type=int, default=CHAIN, help="steps of the chain (default 100)")
    p.add_argument("--concurrent", type=int, default=100, help="concurrent runs of the small DAG")
    p.add_argument("--step-ms", type=float, default=20.0, help="sleep of each step of the concurrent runs")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each timed part (default 3)")
    p.add_argument("--skip", default="", help="comma-separated: swarm,dask,prefect")
    p.add_argument("--seed", type=int, default=4, help="the random edges' seed")
    p.add_argument("--prefect-python", type=Path, help="an interpreter that can import prefect")
    p.add_argument("--prefect-timeout", type=float, default=600.0)
    p.add_argument(
        "--prefect-concurrent",
        type=int,
        default=10,
        help="at most this many concurrent Prefect flows (default 10: 100 take over ten minutes)",
    )
    p.add_argument(
        "--prefect-no-concurrent", action="store_true", help="leave out Prefect's concurrent flows"
    )
    p.add_argument("--profile", action="store_true", help="py-spy on both swarm nodes while they run")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when swarm met every goal, 3 when it missed one, 1 when a run failed."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.nodes, args.big_nodes, args.chain, args.concurrent, args.repeat = 100, 1000, 30, 10, 1
        args.width = min(args.width, 10)
        args.prefect_no_concurrent = True  # Prefect's 10 flows at once alone take over a minute
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {"swarm", "dask", "prefect"}:
        _parser().error(f"--skip: unknown {sorted(skip - {'swarm', 'dask', 'prefect'})}")
    logging.basicConfig(level=logging.WARNING)
    rng = random.Random(args.seed)
    shapes = {
        f"def{args.nodes}": layered(args.nodes, args.width, rng),
        f"def{args.big_nodes}": layered(args.big_nodes, args.width, rng),
        "chain": chain(args.chain),
        "small": layered(SMALL_NODES, SMALL_WIDTH, rng),
    }
    shapes["e2e"] = shapes[f"def{args.nodes}"]
    results: list[Figures] = []
    failed = False
    try:
        with sigterm_as_interrupt(), scratch_dir("swarm-dagbench-") as root:
            if "swarm" not in skip:
                try:
                    results.append(bench_swarm(root, args, shapes, rng))
                except Exception as exc:
                    failed = True
                    say(f"swarm failed: {type(exc).__name__}: {exc}")
                    results.append(Figures("swarm", skipped=f"FAILED: {type(exc).__name__}: {exc}"[:300]))
            if "dask" not in skip:
                say("dask ...")
                results.append(_guard("Dask", lambda: bench_dask(args, shapes)))
            if "prefect" not in skip:
                say("prefect ...")
                results.append(_guard("Prefect", lambda: bench_prefect(root, args, shapes)))
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    met = report(results, args, shapes)
    return 1 if failed else (0 if met else 3)


def _guard(name: str, run: Callable[[], Figures]) -> Figures:
    try:
        return run()
    except Exception as exc:
        return Figures(name, skipped=f"not measured: {type(exc).__name__}: {str(exc)[:200]}")


if __name__ == "__main__":
    sys.exit(main())
