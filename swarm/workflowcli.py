"""`swarm dag ...` and `swarm artifact ...`: DAG workflows and their code, through a node's HTTP API.

Each command talks to one node's API (`swarm.apiclient.ApiClient`): `--api URL`, else `$SWARM_API`, else
the API of the first alive member heard on the broker (what `swarm status` shows). Errors are one line
on stderr: exit 1 for a refusal or a failed run, 2 for bad usage or a definition file that does not parse.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from swarm.config import NodeConfig
from swarm.errors import SwarmError
from swarm.trust.credentials import Credential

# Every `swarm` command builds the parsers here; only `dag` and `artifact` commands need the API
# client and the definition parser (with the workflow model and YAML: a tenth of a command's start).
if TYPE_CHECKING:
    from swarm.apiclient import ApiClient

__all__ = [
    "WORKFLOW_COMMANDS",
    "add_workflow_parsers",
    "describe_definition",
    "discover_api",
    "run_workflow_command",
]

WORKFLOW_COMMANDS = frozenset({"dag", "artifact"})
#: Seconds to listen for heartbeats naming an API before giving up.
DISCOVERY_SECONDS = 3.0
_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}

Json = dict[str, Any]
FindBroker = Callable[[str | None], Awaitable[str]]


class UsageError(SwarmError):
    """Bad arguments or a definition file that does not parse: exit status 2."""


def add_workflow_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `dag` and `artifact` to the `swarm` parser; `common` adds --broker, --token, --cluster, ..."""

    def leaf(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        common(parser)
        parser.add_argument("--api", metavar="URL", help="a node's API (default: $SWARM_API, or discovered)")
        return parser

    dag = sub.add_parser("dag", help="define, run and inspect DAG workflows").add_subparsers(
        dest="action", required=True
    )
    define = leaf(dag, "define", "define a DAG version from a .json or .yaml file")
    define.add_argument("file", type=Path)
    define.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    leaf(dag, "list", "every DAG and its last run").add_argument("--json", action="store_true")
    show = leaf(dag, "show", "a DAG version with its definition (JSON)")
    show.add_argument("dag_id")
    show.add_argument("--version")
    run = leaf(dag, "run", "start a run")
    run.add_argument("dag_id")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="JSON or text")
    run.add_argument("--version")
    run.add_argument("--run-id", help="idempotency key: the same id never starts a second run")
    run.add_argument("--wait", action="store_true", help="show progress, then print the finished run")
    run.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    runs = leaf(dag, "runs", "the newest runs")
    runs.add_argument("dag_id", nargs="?")
    runs.add_argument("--state", help="QUEUED, RUNNING, SUCCESS, FAILED or CANCELLED")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true")
    status = leaf(dag, "status", "a run and its steps")
    status.add_argument("run_id")
    status.add_argument("--json", action="store_true")
    leaf(dag, "cancel", "cancel a run").add_argument("run_id")
    history = leaf(dag, "history", "the newest runs of a DAG with their steps (JSON)")
    history.add_argument("dag_id")
    history.add_argument("--limit", type=int, default=20)
    leaf(dag, "analytics", "per-step statistics and suggestions (JSON)").add_argument("dag_id")

    artifact = sub.add_parser("artifact", help="push and inspect the code DAG steps run").add_subparsers(
        dest="action", required=True
    )
    push = leaf(artifact, "push", "upload a file or a directory as a versioned artifact")
    push.add_argument("path", type=Path)
    push.add_argument("--name", required=True)
    push.add_argument("--version", required=True, help="MAJOR.MINOR[.PATCH], e.g. 1.0")
    push.add_argument(
        "--kind",
        choices=("python", "shell", "jar", "mapreduce"),
        help="default: from the path; mapreduce: a MapReduce app's module, for MAPREDUCE steps",
    )
    leaf(artifact, "list", "every artifact version").add_argument("--json", action="store_true")
    show_artifact = leaf(artifact, "show", "an artifact's versions, or one version")
    show_artifact.add_argument("ref", metavar="NAME[@VERSION]")
    show_artifact.add_argument("--source", action="store_true", help="print the code (of the latest version)")


async def run_workflow_command(args: argparse.Namespace, config: NodeConfig, find_broker: FindBroker) -> int:
    """Run a `dag` or `artifact` command; its exit status. `find_broker(known)` gives the broker's URL."""
    from swarm.apiclient import ApiClient, ApiError
    from swarm.runtime.identity import client_credential

    try:
        credential = client_credential(config.cluster, args.token)
        url = args.api or os.environ.get("SWARM_API") or await discover_api(config, credential, find_broker)
        client = ApiClient(url, credential.to_token())
        command = _COMMANDS[(args.command, args.action)]
        return command(client, args)
    except UsageError as exc:
        print(f"swarm: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        # A definition the server cannot parse is a bad file, like one that fails locally.
        print(f"swarm: {exc}", file=sys.stderr)
        return 2 if exc.status == 400 and args.action == "define" else 1
    except (SwarmError, TimeoutError, OSError) as exc:
        print(f"swarm: {exc}", file=sys.stderr)
        return 1


async def discover_api(config: NodeConfig, credential: Credential, find_broker: FindBroker) -> str:
    """The API URL of the first alive member (by id) whose heartbeat names one."""
    import asyncio

    from swarm.runtime.client import SwarmClient
    from swarm.runtime.identity import broker_login

    broker = await find_broker(credential.broker_url or None)
    login = broker_login(config, credential)
    async with SwarmClient(broker, credential, login=login, max_bytes=config.max_message_bytes) as client:
        await client.watch_members(0.2)
        for _ in range(int(DISCOVERY_SECONDS / 0.1)):
            for view in sorted(client.members.values(), key=lambda v: v.node_id):
                if view.state == "alive" and view.heartbeat is not None and view.heartbeat.api:
                    return str(view.heartbeat.api)
            await asyncio.sleep(0.1)
    raise SwarmError("no node serves an HTTP API; start one with `swarm join` (or give --api URL)")


# --- output helpers ---------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _seconds(value: object) -> str:
    return f"{value:.1f}s" if isinstance(value, int | float) else "-"


def _when(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _cell(value: object, width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    return (text if len(text) < width else text[: width - 2] + "~").ljust(width)


# --- dag --------------------------------------------------------------------------------------------


def _load_file(path: Path) -> Json:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: expected a .json, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from None
    from swarm.workflow.definition_parser import load_definition
    from swarm.workflow.fields import DefinitionError

    try:
        return load_definition(text, "json" if fmt == "json" else "yaml").to_json()
    except DefinitionError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _define(client: ApiClient, args: argparse.Namespace) -> int:
    answer = client.define(_load_file(args.file))
    valid = bool(answer.get("validationResults", {}).get("isValid"))
    if args.json:
        _print_json(answer)
        return 0 if valid else 1
    for line in describe_definition(answer):
        print(line)
    return 0 if valid else 1


def describe_definition(answer: Json) -> list[str]:
    """A define answer as lines for people: status, critical path, bottleneck, estimate, parallel
    sections, then every error, warning, suggestion and field not applied."""
    lines = [f"{answer.get('dagId')} {answer.get('version')}: {answer.get('status')}"]
    flow = answer.get("dataFlowAnalysis") or {}
    if flow.get("criticalPath"):
        lines.append(f"  critical path:  {' -> '.join(flow['criticalPath'])}")
    if flow.get("bottleneckNode"):
        lines.append(f"  bottleneck:     {flow['bottleneckNode']}")
    if answer.get("estimatedExecutionTime"):
        lines.append(f"  estimated time: {answer['estimatedExecutionTime']}")
    for section in flow.get("parallelizableSections") or ():
        nodes = ", ".join(section.get("nodes", []))
        lines.append(f"  parallel:       {nodes} (up to {section.get('maxParallelism')})")
    results = answer.get("validationResults") or {}
    for title in ("errors", "warnings", "suggestions"):
        for item in results.get(title) or ():
            where = f"{item['nodeId']}: " if item.get("nodeId") else ""
            action = f" [{item['action']}]" if item.get("action") else ""
            lines.append(f"  {title[:-1]}: {where}{item.get('message')}{action}")
    for note in answer.get("notApplied") or ():
        lines.append(f"  not applied: {note.get('path')}: {note.get('reason')}")
    return lines


def _dag_list(client: ApiClient, args: argparse.Namespace) -> int:
    dags = client.dags()
    if args.json:
        _print_json(dags)
        return 0
    print(f"{'DAG':<28}{'VERSION':<12}{'NAME':<28}LAST RUN")
    for d in dags:
        last = d.get("lastRun") or {}
        last_text = f"{last.get('runId')} {last.get('state')}" if last else "-"
        print(
            f"{_cell(d.get('dagId'), 28)}{_cell(d.get('latestVersion'), 12)}{_cell(d.get('name'), 28)}"
            f"{last_text}"
        )
    return 0


def _dag_show(client: ApiClient, args: argparse.Namespace) -> int:
    _print_json(client.dag(args.dag_id, args.version))
    return 0


def _params(pairs: list[str]) -> Json:
    params: Json = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        if not eq or not name:
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            params[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            params[name] = text
    return params


def _step_printer(started: float) -> Callable[[Json], None]:
    """An `on_change` that prints one stderr line per run or step state change."""
    from swarm.apiclient import FINAL_STATES

    seen: dict[tuple[object, object], tuple[object, object]] = {}
    run_state: list[object] = [None]

    def show(run: Json) -> None:
        elapsed = f"[{time.monotonic() - started:6.1f}s]"
        state = run.get("state")
        changed = state != run_state[0]
        run_state[0] = state
        # The run's final state comes last, after the steps that decided it.
        if changed and state not in FINAL_STATES:
            print(f"{elapsed} run {run.get('runId')} {state}", file=sys.stderr, flush=True)
        for step in run.get("nodes", ()):
            key = (step.get("nodeId"), step.get("shard"))
            now = (step.get("state"), step.get("attempt"))
            if seen.get(key) == now:
                continue
            seen[key] = now
            extra = f" on {step['device']}" if step.get("device") else ""
            if (step.get("attempt") or 1) > 1:
                extra += f" (attempt {step['attempt']})"
            if step.get("error"):
                extra += f": {str(step['error']).splitlines()[0][:200]}"
            line = f"{elapsed}   {key[0]}#{key[1]} {step.get('state')}{extra}"
            print(line, file=sys.stderr, flush=True)
        if changed and state in FINAL_STATES:
            print(f"{elapsed} run {run.get('runId')} {state}", file=sys.stderr, flush=True)

    return show


def _dag_run(client: ApiClient, args: argparse.Namespace) -> int:
    params = _params(args.param)
    started = client.run(args.dag_id, params, args.version, args.run_id)
    run_id = str(started["runId"])
    if not args.wait:
        print(run_id)
        return 0
    final = client.wait(run_id, timeout=args.timeout, on_change=_step_printer(time.monotonic()))
    _print_json(final)
    return 0 if final.get("state") == "SUCCESS" else 1


def _dag_runs(client: ApiClient, args: argparse.Namespace) -> int:
    runs = client.runs(args.dag_id, args.state, args.limit)
    if args.json:
        _print_json(runs)
        return 0
    print(f"{'RUN':<40}{'DAG':<22}{'VERSION':<10}{'STATE':<11}{'TRIGGERED':<21}DURATION")
    for r in runs:
        print(
            f"{_cell(r.get('runId'), 40)}{_cell(r.get('dagId'), 22)}{_cell(r.get('version'), 10)}"
            f"{_cell(r.get('state'), 11)}{_cell(_when(r.get('triggeredAt')), 21)}"
            f"{_seconds(r.get('durationS'))}"
        )
    return 0


def _dag_status(client: ApiClient, args: argparse.Namespace) -> int:
    run = client.get_run(args.run_id)
    if args.json:
        _print_json(run)
        return 0
    print(
        f"run {run.get('runId')}  dag {run.get('dagId')} {run.get('version') or '-'}  {run.get('state')}"
        f"  duration {_seconds(run.get('durationS'))}"
    )
    print(f"{'NODE':<24}{'SHARD':>5}  {'STATE':<10}{'TRY':>4}  {'DEVICE':<16}{'DURATION':>9}  ERROR")
    for s in run.get("nodes", ()):
        error = str(s.get("error") or "").splitlines()
        line = (
            f"{_cell(s.get('nodeId'), 24)}{s.get('shard', 0):>5}  {_cell(s.get('state'), 10)}"
            f"{s.get('attempt', 0):>4}  {_cell(s.get('device'), 16)}{_seconds(s.get('durationS')):>9}"
            f"  {error[0][:120] if error else ''}"
        )
        print(line.rstrip())
    return 0


def _dag_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    client.cancel(args.run_id)
    print(f"cancel requested for {args.run_id}")
    return 0


def _dag_history(client: ApiClient, args: argparse.Namespace) -> int:
    _print_json(client.history(args.dag_id, args.limit))
    return 0


def _dag_analytics(client: ApiClient, args: argparse.Namespace) -> int:
    _print_json(client.analytics(args.dag_id))
    return 0


# --- artifact ---------------------------------------------------------------------------------------


def _artifact_push(client: ApiClient, args: argparse.Namespace) -> int:
    meta = client.push_artifact(args.path, args.name, args.version, args.kind)
    artifact = meta.get("artifactId") or f"{args.name}-v{args.version}"
    sha = f"  sha256 {meta['sha256']}" if meta.get("sha256") else ""
    print(f"pushed {artifact}: {meta.get('kind')}, {meta.get('size')} bytes{sha}")
    return 0


def _artifact_list(client: ApiClient, args: argparse.Namespace) -> int:
    items = client.artifacts()
    if args.json:
        _print_json(items)
        return 0
    print(f"{'NAME':<28}{'VERSION':<12}{'KIND':<8}{'SIZE':>10}  {'FILE':<24}BY")
    for a in items:
        print(
            f"{_cell(a.get('name'), 28)}{_cell(a.get('version'), 12)}{_cell(a.get('kind'), 8)}"
            f"{a.get('size', 0):>10}  {_cell(a.get('filename'), 24)}{a.get('createdBy') or '-'}"
        )
    return 0


def _artifact_show(client: ApiClient, args: argparse.Namespace) -> int:
    name, at, version = str(args.ref).rpartition("@")
    if not at:
        name, version = version, ""
    if not name:
        raise UsageError(f"{args.ref!r}: expected NAME or NAME@VERSION")
    if not args.source:
        _print_json(client.artifact(name, version or None))
        return 0
    if not version:
        versions = client.artifact(name).get("versions") or []
        if not versions:
            raise SwarmError(f"artifact {name!r} has no versions")
        version = str(versions[0]["version"])
    data = client.artifact_source(name, version)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


_COMMANDS: dict[tuple[str, str], Callable[[ApiClient, argparse.Namespace], int]] = {
    ("dag", "define"): _define,
    ("dag", "list"): _dag_list,
    ("dag", "show"): _dag_show,
    ("dag", "run"): _dag_run,
    ("dag", "runs"): _dag_runs,
    ("dag", "status"): _dag_status,
    ("dag", "cancel"): _dag_cancel,
    ("dag", "history"): _dag_history,
    ("dag", "analytics"): _dag_analytics,
    ("artifact", "push"): _artifact_push,
    ("artifact", "list"): _artifact_list,
    ("artifact", "show"): _artifact_show,
}
