"""`swarm demo sales [--rows N]`: seed 004's sales analytics pipeline, built from nothing.

On a running cluster (`--api URL`, else an alive node of `--cluster` found on its broker, else a node this
command starts for its own duration, with a throwaway cluster under a temporary `$SWARM_HOME`), it:

1. defines two task standards (ETL and ANALYSIS: schemas, resource ceilings, SLA);
2. pushes the step code as artifacts: the Python module `sales_pipeline`, the MapReduce app
   `sales_aggregate`, and a jar it compiles from `jvm/SalesCurrencyConverter.java` with `javac` and
   `jar` (no JDK: the step runs the Python twin);
3. defines the DAG through the HTTP API: `extract-sales` (one shard per row range) ->
   `aggregate-sales` (runtime MAPREDUCE: a job of the engine, one map per shard and two reduces) ->
   `tabulate-sales` -> `convert-currency` (JVM) and `analyze-sales` -> `load-report`;
4. asks for a resource allocation, which holds slots until the run starts its steps in them;
5. runs it, printing each step's state changes live on stderr (`--cockpit`: and opens the web cockpit
   on the run, its 3D view live);
6. prints the aggregates (region x category: orders, quantity, revenue), the definition's analysis
   (critical path, bottleneck, estimate, warnings, suggestions) and the measured time of every step.

The data is deterministic (`steps.sales_pipeline.sale(seed, i)`): each extract shard generates its
own orders, so no data file is shipped. The cleaned orders reach the aggregation's maps through the data
plane once they are larger than the inline limit; the maps' sums cross the shuffle to the reduces; only
small outputs and references cross the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from swarm.apiclient import FINAL_STATES, ApiClient, ApiError
from swarm.cockpit.cli import cockpit_url
from swarm.config import NodeConfig
from swarm.demo.cli import DEFAULT_ROWS, DEFAULT_SEED, DEFAULT_SHARDS, DEFAULT_TIMEOUT
from swarm.demo.localnode import LocalNode, cluster_api
from swarm.demo.salesdag import (
    APP_FILE,
    DAG_ID,
    DEFAULT_RATE,
    JVM_CLASS,
    STEPS_DIR,
    allocation_request,
    build_definition,
    build_jar,
    content_version,
    standards,
    write_csv,
)
from swarm.errors import SwarmError
from swarm.runtime.artifacts import pack
from swarm.workflowcli import describe_definition

__all__ = ["DemoOptions", "DemoResult", "run_demo", "run_demo_command"]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to generate and how to run it."""

    rows: int = DEFAULT_ROWS
    seed: int = DEFAULT_SEED
    shards: int = DEFAULT_SHARDS
    rate: str = DEFAULT_RATE
    timeout: float = DEFAULT_TIMEOUT
    jvm: bool = True
    #: Print the cockpit's URL on the run and open it in a browser.
    cockpit: bool = False


@dataclass
class DemoResult:
    """What a demo run produced: the run, its aggregates and the analyses."""

    run_id: str
    state: str
    table: list[Json] = field(default_factory=list)
    converted: Json = field(default_factory=dict)
    insights: Json = field(default_factory=dict)
    report: str = ""
    defined: Json = field(default_factory=dict)
    run: Json = field(default_factory=dict)
    jvm_used: bool = False


def _push(api: ApiClient, path: Path, name: str, kind: str) -> str:
    """Push `path` as `name` at a version derived from its bytes; its artifact id."""
    _, data = pack(path)
    version = content_version(data)
    answer = api.push_artifact(path, name, version, kind=kind)
    return str(answer.get("artifactId") or f"{name}-v{version}")


def _jvm_offered(api: ApiClient) -> bool:
    """Whether some alive member offers the JVM runtime (else a JVM step would wait for one forever)."""
    try:
        devices = api.devices()
    except ApiError:
        return True  # cannot tell: let placement decide
    return any(d.get("state") == "alive" and "JVM" in (d.get("runtimes") or ()) for d in devices)


# --- the demo itself --------------------------------------------------------------------------------


class _Api(ApiClient):
    """The client with the two endpoints the shared client does not cover yet."""

    def define_standard(self, standard: Json) -> Json:
        """POST /standards."""
        return self._json("POST", "/standards", standard)

    def allocate(self, body: Json) -> Json:
        """POST /resources/allocate."""
        return self._json("POST", "/resources/allocate", body)

    def start(self, dag_id: str, params: Json, version: str, allocation_id: str | None) -> Json:
        """Start a run, with the placement of an allocation when one is given."""
        body: Json = {"params": params, "version": version}
        if allocation_id is not None:
            body["allocationId"] = allocation_id
        return self._json("POST", f"/dags/{dag_id}/runs", body)


class _Progress:
    """Prints one line per step state change of a run (on_change of `ApiClient.wait`)."""

    def __init__(self, err: TextIO, clock: Callable[[], float]) -> None:
        self._err, self._clock = err, clock
        self._start = clock()
        self._seen: dict[tuple[str, int], str] = {}
        self._state = ""

    def __call__(self, run: Json) -> None:
        at = self._clock() - self._start
        state = str(run.get("state"))
        if state != self._state and state not in FINAL_STATES:
            self._state = state
            self._err.write(f"  [{at:6.1f}s] run {run.get('runId')}: {state}\n")
        for n in sorted(run.get("nodes") or (), key=lambda n: (n.get("startedAt") or 0, n.get("nodeId"))):
            key = (str(n.get("nodeId")), int(n.get("shard") or 0))
            state = str(n.get("state"))
            if self._seen.get(key) == state:
                continue
            self._seen[key] = state
            fanned = key[0] == "extract-sales" or key[0].endswith((".map", ".reduce"))
            shard = f"#{key[1]}" if fanned else ""
            where = f" on {n['device']}" if n.get("device") else ""
            took = f" in {n['durationS']:.2f}s" if isinstance(n.get("durationS"), int | float) else ""
            self._err.write(f"  [{at:6.1f}s] {key[0] + shard:<24} {state:<9}{took}{where}\n")
        if str(run.get("state")) != self._state:
            self._state = str(run.get("state"))
            self._err.write(f"  [{at:6.1f}s] run {run.get('runId')}: {self._state}\n")
        self._err.flush()


def run_demo(
    url: str,
    token: str,
    options: DemoOptions,
    work: Path,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    clock: Callable[[], float] = time.monotonic,
    open_url: Callable[[str], bool] = webbrowser.open,
) -> DemoResult:
    """Build and run the whole scenario on the cluster whose node API is at `url`; `work` is a scratch
    directory (the jar is built there). With `options.cockpit`, the cockpit's URL on the run is printed
    and handed to `open_url` once the run has started."""
    client = _Api(url, token)

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    say("1. task standards")
    for standard in standards():
        answer = client.define_standard(standard)
        say(
            f"   {answer.get('key')}: {standard['category']}, ceiling {standard['resourceCeiling']}, "
            f"SLA {standard['sla']}"
        )

    say("2. artifacts")
    steps_id = _push(client, STEPS_DIR, "sales-steps", "python")
    say(f"   {steps_id}: Python steps (sales_pipeline.py)")
    app_id = _push(client, APP_FILE, "sales-aggregate", "mapreduce")
    say(f"   {app_id}: the aggregation's MapReduce app (sales_aggregate.py)")
    jar_id = None
    jar = build_jar(work, lambda t: say("   " + t)) if options.jvm else None
    if jar is not None and not _jvm_offered(client):
        say("   no alive node offers the JVM runtime: the currency step runs its Python fallback")
        jar = None
    if jar is not None:
        jar_id = _push(client, jar, "sales-jvm", "jar")
        say(f"   {jar_id}: {JVM_CLASS} compiled with javac ({jar.stat().st_size} bytes)")

    say("3. DAG definition (POST /api/v1/dag/define)")
    definition = build_definition(options.shards, steps_id, app_id, jar_id)
    defined = client.define(definition)
    for line in describe_definition(defined):
        say("  " + line)
    if not defined.get("validationResults", {}).get("isValid"):
        raise SwarmError(f"the demo DAG was refused: {defined.get('validationResults')}")

    say("4. resource allocation (POST /api/v1/resources/allocate)")
    allocation_id = _allocate(client, definition, say)

    say(
        f"5. run: {options.rows} orders (seed {options.seed}) in {options.shards} extract shards, "
        f"aggregated by a MapReduce job of {options.shards} maps and 2 reduces"
    )
    params = {"rows": options.rows, "seed": options.seed, "rate": options.rate}
    started = client.start(DAG_ID, params, str(definition["version"]), allocation_id)
    run_id = str(started["runId"])
    if options.cockpit:
        view = cockpit_url(url, token, run_id)
        say(f"   cockpit on this run: {view}")
        if not open_url(view):
            say("   (no web browser could be opened here: open the URL above)")
    err.write(f"   following {run_id} (live step states on stderr)\n")
    final = client.wait(run_id, timeout=options.timeout, on_change=_Progress(err, clock))
    result = _result(final, defined, jar_id is not None)
    say(f"6. results: run {run_id} {result.state}")
    _print_results(result, say)
    try:
        _print_analytics(client.analytics(DAG_ID), say)
    except ApiError as exc:
        say(f"   (measured analytics unavailable: {exc.message})")
    return result


def _allocate(client: _Api, definition: Json, say: Callable[[str], None]) -> str | None:
    """Ask for an allocation and say what the node answered; the allocation id to run with, if any."""
    allocation_id = None
    try:
        allocated = client.allocate(allocation_request(definition))
    except ApiError as exc:
        say(f"   not allocated: the node answered {exc.status}: {exc.message}")
    else:
        placed = (allocated.get("allocatedResources") or {}).get("computeResources") or []
        say(f"   {allocated.get('status')} ({allocated.get('allocationId')}): {len(placed)} step(s) placed")
        for item in placed:
            say(f"     {item.get('nodeId')} -> {item.get('allocatedNodeId')}")
        reservation = allocated.get("reservation") or {}
        if reservation.get("holdsCapacity"):
            slots = sum(int(h.get("slots", 0)) for h in reservation.get("heldSlots") or ())
            say(f"     {slots} slot(s) held until the run starts them or {reservation.get('expiresAt')}")
        if allocated.get("status") in ("ALLOCATED", "PARTIAL") and allocated.get("allocationId"):
            allocation_id = str(allocated["allocationId"])
    return allocation_id


def _outputs(run: Json, node_id: str) -> Json:
    for n in run.get("nodes") or ():
        if n.get("nodeId") == node_id and n.get("state") == "SUCCESS" and isinstance(n.get("output"), dict):
            return dict(n["output"])
    return {}


def _result(run: Json, defined: Json, jvm: bool) -> DemoResult:
    table = _outputs(run, "tabulate-sales")
    report = _outputs(run, "load-report")
    convert = _outputs(run, "convert-currency")
    return DemoResult(
        run_id=str(run.get("runId")),
        state=str(run.get("state")),
        table=list(table.get("table") or []),
        converted=convert,
        insights=dict(_outputs(run, "analyze-sales").get("insights") or {}),
        report=str(report.get("report") or ""),
        defined=defined,
        run=run,
        jvm_used=jvm,
    )


def _print_results(result: DemoResult, say: Callable[[str], None]) -> None:
    if result.report:
        for line in result.report.splitlines():
            say("   " + line)
    else:
        for n in result.run.get("nodes") or ():
            if n.get("state") != "SUCCESS":
                say(f"   {n.get('nodeId')}#{n.get('shard')}: {n.get('state')} {n.get('error') or ''}")
    if result.insights:
        i = result.insights
        say(
            f"   top region {i.get('topRegion')}, top category {i.get('topCategory')}, best month "
            f"{i.get('bestMonth')}, worst {i.get('worstMonth')}, "
            f"average order {i.get('avgOrderFen', 0) / 100:.2f} CNY"
        )
        say(f"   revenue share by region: {i.get('regionShare')}")
    say("   measured steps (wall s, cpu s, device):")
    for n in sorted(result.run.get("nodes") or (), key=lambda n: n.get("startedAt") or 0):
        wall, cpu = n.get("durationS"), n.get("cpuS")
        say(
            f"     {n.get('nodeId')}#{n.get('shard')}: {n.get('state')} "
            f"{wall if wall is None else round(wall, 3)} s, cpu {cpu if cpu is None else round(cpu, 3)} s"
            f" on {n.get('device')}"
        )
    run = result.run
    if isinstance(run.get("durationS"), int | float):
        say(f"   run took {run['durationS']:.2f} s")


def _print_analytics(analytics: Json, say: Callable[[str], None]) -> None:
    flow = analytics.get("dataFlowAnalysis") or {}
    if flow:
        say(
            f"   measured critical path: {' -> '.join(flow.get('criticalPath') or [])}; "
            f"bottleneck {flow.get('bottleneckNode')}"
        )
    for item in analytics.get("suggestions") or ():
        where = f"{item['nodeId']}: " if item.get("nodeId") else ""
        say(f"   suggestion: {where}{item.get('message')}")


async def run_demo_command(args: argparse.Namespace, config: NodeConfig) -> int:
    """Run `swarm demo sales`; its exit status (0: the run succeeded)."""
    if args.rows < 1 or args.shards < 1 or args.shards > 64:
        print("swarm: --rows must be at least 1 and --shards between 1 and 64", file=sys.stderr)
        return 2
    options = DemoOptions(
        args.rows, args.seed, args.shards, args.rate, args.timeout, not args.no_jvm, args.cockpit
    )
    if args.csv is not None:
        write_csv(args.csv, options.rows, options.seed)
        print(f"wrote {options.rows} orders to {args.csv}")
    with tempfile.TemporaryDirectory(prefix="swarm-demo-") as scratch:
        work = Path(scratch)
        node: LocalNode | None = None
        try:
            target = await _target(args, config)
            if target is None:
                node = LocalNode(work / "home", f"demo-{os.getpid()}")
                (work / "home").mkdir()
                print("0. no node found: starting one for the demo (a throwaway cluster on loopback)")
                target = node.url, node.start()
                print(f"   node API at {node.url}")
            else:
                print(f"0. using the node API at {target[0]}")
            result = run_demo(target[0], target[1], options, work)
            if node is not None and options.cockpit:
                print("   the demo node keeps serving the cockpit; Ctrl-C stops it")
                await asyncio.Event().wait()
        except (SwarmError, TimeoutError) as exc:
            print(f"swarm: {exc}", file=sys.stderr)
            return 1
        finally:
            if node is not None:
                node.stop()
                print("   demo node stopped")
    return 0 if result.state == "SUCCESS" else 1


async def _target(args: argparse.Namespace, config: NodeConfig) -> tuple[str, str] | None:
    url = args.api or os.environ.get("SWARM_API")
    if url:
        from swarm.runtime.identity import client_credential

        return url, client_credential(config.cluster, args.token).to_token()
    return await cluster_api(config, args.token)
