"""`swarm`: join a cluster, look at it, submit work to it.

Every command that talks to a cluster takes `--broker` and `--cluster`, which also come from
`$SWARM_BROKER` / `$SWARM_CLUSTER` and the config file; without a broker, clients look for one over mDNS.
A machine keeps its cluster secrets and node data under `$SWARM_HOME` (default `~/.swarm`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from swarm import eventloop
from swarm.config import NodeConfig, load_config
from swarm.errors import SwarmError
from swarm.ids import new_job_id
from swarm.messages import PRIORITIES, SubmitJob
from swarm.submitcli import (
    NO_COORDINATOR,
    print_json,
    run_cancel,
    run_mapreduce_command,
    run_result,
    submit_job,
)
from swarm.trustcli import TRUST_COMMANDS, add_trust_parsers, run_trust_command, show_quota
from swarm.workflowcli import WORKFLOW_COMMANDS, add_workflow_parsers, run_workflow_command

__all__ = ["main"]

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="mqtts://host:port (default: $SWARM_BROKER, config, or mDNS)")
    p.add_argument(
        "--token",
        help="a token from `swarm token create` (default: $SWARM_TOKEN, or the owner's on the cluster's"
        " first machine); for `join`, a token from `swarm invite`",
    )
    p.add_argument("--cluster", help="cluster name (default: $SWARM_CLUSTER, config, or 'default')")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("-v", "--verbose", action="store_true")


def _add_submit(sub: Any) -> None:
    from swarm.jobspec import REQUIREMENT_KEYS

    submit = sub.add_parser("submit", help="submit work")
    submit_sub = submit.add_subparsers(dest="what", required=True)
    task = submit_sub.add_parser(
        "task",
        help="one task",
        epilog='examples:\n  swarm submit task echo --payload \'{"message": "hi"}\' --wait\n'
        '  swarm submit task python_eval --payload \'{"expression": "6 * 7"}\' --require min_cores=2\n'
        f"\ntask types installed here: {_TASK_TYPES}",
        formatter_class=_ListsTaskTypes,
    )
    _common(task)
    task.add_argument("type", help="a task type (listed below)")
    task.add_argument("--payload", default="{}", help="JSON object")
    task.add_argument("--priority", choices=PRIORITIES, default="normal")
    task.add_argument("--timeout", type=float)
    task.add_argument("--max-retries", type=int, default=3)
    task.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{', '.join(REQUIREMENT_KEYS)} (docs/jobs.md)",
    )
    task.add_argument("--pending-timeout", type=float, help="fail if no member can run it for this long")
    task.add_argument("--job-id", help="idempotency key: resubmitting it never runs the task twice")
    _wait_flags(task)
    batch = submit_sub.add_parser("batch", help="a batch, chain or group from a JSON/YAML file")
    _common(batch)
    batch.add_argument("file", type=Path)
    batch.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    batch.add_argument("--job-id")
    _wait_flags(batch)

    mr = submit_sub.add_parser("mapreduce", help="a MapReduce job over local input files")
    _common(mr)
    mr.add_argument("--app", required=True, help="a .py file, or wordcount|indexer|grep|sort|groupby")
    mr.add_argument("--input", nargs="+", required=True, type=Path, metavar="FILE")
    mr.add_argument("--reduces", type=int, required=True, metavar="R")
    mr.add_argument("--output", type=Path, required=True, metavar="DIR")
    mr.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="passed to the app")
    mr.add_argument(
        "--split-size",
        type=_size,
        help="map inputs in splits of about SIZE (default: whole waves of maps over the cluster's slots,"
        " splits of 4M to 128M): larger files are cut, smaller ones packed together; a smaller SIZE gives"
        " more, smaller map tasks",
    )
    mr.add_argument("--combiner", choices=("sum", "count", "min", "max"))
    mr.add_argument("--compress", action="store_true", help="compress intermediate runs")
    mr.add_argument("--max-retries", type=int, default=3)
    mr.add_argument("--timeout", type=float, help="per task")
    mr.add_argument("--job-id")
    mr.add_argument("--wait", action="store_true", help="show progress (the command always runs to the end)")
    mr.add_argument("--json", action="store_true", help="print the summary as indented JSON")
    mr.add_argument("--wait-for-cluster", action="store_true", help=argparse.SUPPRESS)


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="follow the job to its end, with progress")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument(
        "--wait-for-cluster",
        action="store_true",
        help="wait for a coordinator instead of giving up after a few seconds without one",
    )


_TASK_TYPES = "<task types>"


class _ListsTaskTypes(argparse.RawDescriptionHelpFormatter):
    """Names the task types installed here when the help is shown, from entry point names only (nothing
    imported): scanning them while building the parser cost every command 15 ms."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if _TASK_TYPES in text:
            import importlib.metadata

            from swarm.registry import ENTRY_POINT_GROUP

            names = sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
            text = text.replace(_TASK_TYPES, ", ".join(names) or "none")
        return super()._fill_text(text, width, indent)


class _ShowVersion(argparse.Action):
    """`--version`, looked up only when asked: importlib.metadata would cost every command 9 ms."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        import importlib.metadata

        try:
            version = importlib.metadata.version("swarm-cluster")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"swarm {version}")
        parser.exit()


_EXAMPLES = """examples:
  swarm join                                   run a node here (the first one creates the cluster)
  swarm status                                 members, coordinator and epoch
  swarm submit task echo --payload '{"message": "hi"}' --wait
  swarm submit mapreduce --app wordcount --input a.txt --reduces 2 --output out --wait
  swarm tasks --job JOB                        where a job's tasks are, and why they wait or failed
  swarm result JOB                             a job's results, later and from any machine
  swarm service install                        a systemd unit running `swarm join`

The node that started the cluster's broker is special: while it runs, it carries the broker; when it
leaves, the others start a new broker within about 7 seconds and the cluster goes on."""


def _add_join(sub: Any) -> None:
    join = sub.add_parser("join", help="run a node on this device")
    _common(join)
    join.add_argument("--name", help="a name shown by `swarm status` (default: the host name)")
    join.add_argument(
        "--data-dir", type=Path, help="where the node keeps its state (default: $SWARM_HOME/node-<n>)"
    )
    join.add_argument("--slots", type=int, help="tasks run at once (default: cores)")
    join.add_argument("--role", help="a role tasks can require with --require role=ROLE (e.g. gpu, storage)")
    join.add_argument("--no-embedded-broker", action="store_true", help="never start a broker")
    join.add_argument("--api", metavar="HOST:PORT", help="where the HTTP API listens (default 127.0.0.1:0)")
    join.add_argument("--no-api", action="store_true", help="serve no HTTP API")
    join.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label tasks can require")
    join.add_argument(
        "--taint", action="append", metavar="KEY=VALUE:EFFECT", help="NoSchedule or PreferNoSchedule"
    )


def _add_status(sub: Any) -> None:
    status = sub.add_parser("status", help="members, coordinator and epoch")
    _common(status)
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--wait-alive",
        type=int,
        metavar="N",
        help="first wait until N members are alive and a coordinator acts (exit 1 if not within"
        " --wait-timeout), e.g. in a script that starts a cluster and then submits",
    )
    status.add_argument("--wait-timeout", type=float, default=60.0, metavar="S", help="default 60")


def _add_tasks(sub: Any) -> None:
    tasks = sub.add_parser("tasks", help="list tasks and their states")
    _common(tasks)
    tasks.add_argument("--json", action="store_true")
    tasks.add_argument("--job")
    tasks.add_argument("--limit", type=int, default=200)


def _add_sim(sub: Any) -> None:
    from swarm.sim.cliargs import add_sim_parser

    add_sim_parser(sub)


def _add_cancel(sub: Any) -> None:
    cancel = sub.add_parser("cancel", help="cancel a task or a job")
    _common(cancel)
    cancel.add_argument("id", help="a job id or a task id")
    cancel.add_argument("--json", action="store_true")


def _add_result(sub: Any) -> None:
    result = sub.add_parser("result", help="a job's results and errors, from the broker's record of it")
    _common(result)
    result.add_argument("job", help="the job id `swarm submit` printed")
    result.add_argument("--json", action="store_true", help="every task with result, error and attempt")
    result.add_argument("--listen", type=float, default=0.5, help=argparse.SUPPRESS)


def _add_service(sub: Any) -> None:
    from swarm.servicecli import add_service_parser

    add_service_parser(sub)


def _add_cockpit(sub: Any) -> None:
    from swarm.cockpit.cli import add_cockpit_parser

    add_cockpit_parser(sub, _common)


def _add_demo(sub: Any) -> None:
    from swarm.demo.cli import add_demo_parser

    add_demo_parser(sub, _common)


#: The top-level commands, in the order the help lists them: the names each function adds. A command
#: line that names one builds that one's parsers alone; building all 47 cost every command 20 ms.
_COMMANDS: tuple[tuple[frozenset[str], Callable[[Any], None]], ...] = (
    (frozenset({"join"}), _add_join),
    (frozenset({"status"}), _add_status),
    (frozenset({"submit"}), _add_submit),
    (frozenset({"tasks"}), _add_tasks),
    (frozenset({"sim"}), _add_sim),
    (frozenset({"cancel"}), _add_cancel),
    (frozenset({"result"}), _add_result),
    (frozenset({"service"}), _add_service),
    (TRUST_COMMANDS | {"quota"}, lambda sub: add_trust_parsers(sub, _common)),
    (WORKFLOW_COMMANDS, lambda sub: add_workflow_parsers(sub, _common)),
    (frozenset({"cockpit"}), _add_cockpit),
    (frozenset({"demo"}), _add_demo),
)


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of `argv`: with only the parsers of the command it names, or every command's when it
    names none that exists (so that the help and the error list them all)."""
    parser = argparse.ArgumentParser(
        prog="swarm",
        description=__doc__,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_ShowVersion)
    sub = parser.add_subparsers(dest="command", required=True)
    # The top level takes no option with a value, so the first word that is not an option is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    named = [add for names, add in _COMMANDS if command in names]
    for add in named or [add for _, add in _COMMANDS]:
        add(sub)
    return parser


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    try:
        if text[-1:].upper() in units:
            return int(float(text[:-1]) * units[text[-1].upper()])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64M, 1G)") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `swarm` command."""
    if argv is None:
        argv = sys.argv[1:]
    args = _parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) or args.command == "join" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return eventloop.run(_dispatch(args))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # every expected failure becomes one line; a bug keeps its traceback
        message, status = _explain(exc, args)
        if message is None:
            raise
        print(f"swarm: {message}", file=sys.stderr)
        return status


def _explain(exc: BaseException, args: argparse.Namespace) -> tuple[str | None, int]:
    """The one line, and exit status, for a failure a user can fix; (None, 0) for a bug."""
    from swarm.runtime.mqtt import TransportError
    from swarm.submitcli import NoCoordinator

    if isinstance(exc, NoCoordinator):
        return str(exc), NO_COORDINATOR
    if isinstance(exc, SwarmError):
        return str(exc), 2
    if isinstance(exc, TimeoutError):
        return f"{exc or 'timed out'} (start one with `swarm join`)", NO_COORDINATOR
    if isinstance(exc, TransportError | ConnectionError):
        where = getattr(args, "broker", None) or "the cluster's broker"
        return f"cannot reach the broker at {where}: {exc} (is it running? check --broker)", NO_COORDINATOR
    if isinstance(exc, FileExistsError | NotADirectoryError | PermissionError | FileNotFoundError):
        return f"{exc.strerror or exc}: {exc.filename}", 2
    return None, 0


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sim":
        from swarm.sim.cli import run_sim_command

        # The simulator runs in this process; its nodes' routine log lines are not the user's news.
        logging.getLogger("swarm.core").setLevel(logging.ERROR)
        return run_sim_command(args)
    flags: dict[str, Any] = {"broker": args.broker, "cluster": args.cluster}
    if args.command == "join":
        flags.update(name=args.name, data_dir=args.data_dir, slots=args.slots, role=args.role)
        flags.update(labels=args.label, taints=args.taint)
        if args.no_embedded_broker:
            flags["embedded_broker"] = False
        flags["api"] = "" if args.no_api else args.api
        return await _join(load_config(args.config, **flags), args.token)
    if args.command == "service":
        from swarm.servicecli import run_service_command

        return run_service_command(args)
    config = load_config(args.config, **flags)
    if args.command in TRUST_COMMANDS or (args.command == "quota" and args.action in ("set", "unset")):
        return await run_trust_command(args, config, lambda: _client_broker(config, None))
    if args.command == "demo":
        from swarm.demo.sales import run_demo_command

        return await run_demo_command(args, config)
    if args.command == "cockpit":
        from swarm.cockpit.cli import run_cockpit_command

        return await run_cockpit_command(args, config, lambda known: _client_broker(config, known))
    if args.command in WORKFLOW_COMMANDS:
        return await run_workflow_command(args, config, lambda known: _client_broker(config, known))
    handlers = {
        "status": _status,
        "submit": _submit,
        "tasks": _tasks,
        "cancel": run_cancel,
        "result": run_result,
        "quota": show_quota,
    }
    if args.command == "submit" and args.what == "mapreduce":
        _check_output(args.output)
    from swarm.runtime.client import SwarmClient
    from swarm.runtime.identity import broker_login, client_credential

    credential = client_credential(config.cluster, args.token)
    url = await _client_broker(config, credential.broker_url or None)
    login = broker_login(config, credential)
    async with SwarmClient(url, credential, login=login, max_bytes=config.max_message_bytes) as client:
        if args.command == "submit" and args.what == "mapreduce":
            return await run_mapreduce_command(client, url, args)
        return await handlers[args.command](client, args)


async def _client_broker(config: NodeConfig, known: str | None) -> str:
    from swarm.runtime.identity import resolve_broker

    return await resolve_broker(config, known)


async def _join(config: NodeConfig, token: str | None) -> int:
    from swarm.runtime.identity import node_credential
    from swarm.runtime.shell import NodeShell
    from swarm.runtime.storage import NodeStorage

    storage = NodeStorage.open(config.data_dir)
    try:
        credential = await node_credential(config, storage, token, time.time())
        log.info("node %s of cluster %r", credential.id, config.cluster)
        shell = NodeShell(config, storage, credential)
    except BaseException:
        storage.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await shell.run(stop)
    return 0


async def _status(client: Any, args: argparse.Namespace) -> int:
    ready = True
    if args.wait_alive is None:
        members = await client.watch_members(1.2)
    else:
        wanted = args.wait_alive
        if wanted < 1 or args.wait_timeout <= 0:
            raise SwarmError("--wait-alive needs a number of members >= 1 and --wait-timeout a positive time")

        def is_ready(seen: dict[str, Any]) -> bool:
            alive = sum(view.state == "alive" for view in seen.values())
            return client.tracker.coordinator is not None and alive >= wanted

        ready = await client.wait_for_members(is_ready, args.wait_timeout)
        members = client.members
    nodes = []
    for view in sorted(members.values(), key=lambda v: v.node_id):
        hb = view.heartbeat
        nodes.append(
            {
                "id": view.node_id,
                "name": hb.name if hb else None,
                "state": view.state,
                "role": hb.caps.role if hb else None,
                "platform": hb.caps.platform if hb else None,
                "arch": hb.caps.arch if hb else None,
                "cores": hb.caps.cores if hb else None,
                "memory_mb": hb.caps.memory_mb if hb else None,
                "load": round(hb.load, 3) if hb else None,
                "running": hb.running if hb else 0,
                "slots": hb.slots if hb else 0,
                "broker": hb.broker if hb else None,
                "api": (hb.api or None) if hb else None,
                "counters": hb.counters if hb else {},
            }
        )
    api = next((n["api"] for n in nodes if n["api"] and n["state"] == "alive"), None)
    out = {
        "coordinator": client.tracker.coordinator,
        "epoch": client.tracker.epoch,
        "api": api,
        "nodes": nodes,
    }
    if not ready:
        alive = sum(n["state"] == "alive" for n in nodes)
        print(
            f"swarm: not ready within {args.wait_timeout:g} s: {alive} of {args.wait_alive} members alive,"
            f" coordinator {out['coordinator'] or '(none)'}",
            file=sys.stderr,
        )
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0 if ready else 1
    print(f"coordinator: {out['coordinator'] or '(none)'}   epoch: {out['epoch']}")
    print(
        f"{'ID':<14}{'NAME':<18}{'STATE':<9}{'ROLE':<10}{'PLATFORM':<10}{'CORES':>6}{'MEM MB':>8}"
        f"{'LOAD':>6}{'RUN':>5}"
    )
    for n in nodes:
        print(
            f"{n['id']:<14}{(n['name'] or '-')[:17]:<18}{n['state']:<9}{(n['role'] or '-'):<10}"
            f"{(n['platform'] or '-'):<10}{n['cores'] or 0:>6}{n['memory_mb'] or 0:>8}"
            f"{n['load'] or 0:>6.2f}{n['running']:>5}"
        )
    return 0 if ready else 1


async def _submit(client: Any, args: argparse.Namespace) -> int:
    from swarm.jobspec import load_job_file, task_spec

    if args.what == "task":
        try:
            payload = orjson.loads(args.payload)
        except orjson.JSONDecodeError as exc:
            raise SwarmError(f"--payload is not JSON: {exc}") from None
        job_id = args.job_id or new_job_id()
        entry = {
            "type": args.type,
            "payload": payload,
            "priority": args.priority,
            "timeout": args.timeout,
            "max_retries": args.max_retries,
            "require": args.require,
            "pending_timeout": args.pending_timeout,
        }
        from swarm.core.jobs import check_job

        job = SubmitJob(job_id, (task_spec(f"{job_id}.t0", entry, {}),), kind="task")
        check_job(job)
    else:
        variables = dict(v.partition("=")[::2] for v in args.var)
        job = load_job_file(args.file, variables, args.job_id)
    return await submit_job(client, job, args)


def _check_output(output: Path) -> None:
    """A MapReduce output must be a directory (or not exist yet): say so before anything runs."""
    if output.exists() and not output.is_dir():
        raise SwarmError(f"--output {output} is a file; name a directory (it is created if missing)")


async def _tasks(client: Any, args: argparse.Namespace) -> int:
    tasks = await client.tasks(args.limit, args.job)
    errors = await _errors_of_failed(client, tasks)
    tasks = [replace(t, reason=t.reason or errors.get(t.task_id)) for t in tasks]
    if args.json:
        rows = [
            {
                "id": t.task_id,
                "job": t.job_id,
                "type": t.type,
                "state": t.state,
                "attempt": t.attempt,
                "priority": PRIORITIES[t.priority],
                "node": t.node,
                "reason": t.reason,
            }
            for t in tasks
        ]
        print_json(rows)
        return 0
    print(f"{'TASK':<32}{'TYPE':<14}{'STATE':<10}{'TRY':>4}  {'NODE':<14}REASON")
    for t in tasks:
        print(
            f"{t.task_id[:31]:<32}{t.type[:13]:<14}{t.state:<10}{t.attempt:>4}  {(t.node or '-'):<14}"
            f"{t.reason or ''}"
        )
    return 0


async def _errors_of_failed(client: Any, tasks: list[Any]) -> dict[str, str]:
    """The first error line of each failed task without a reason, from its job's retained commits."""
    from swarm.submitcli import first_line

    jobs = sorted({t.job_id for t in tasks if t.state == "failed" and not t.reason})[:_MAX_JOBS_LOOKED_UP]
    errors: dict[str, str] = {}
    fetched = await asyncio.gather(*(client.fetch_job(job_id, listen=0.3) for job_id in jobs))
    for _, progress in fetched:
        for u in progress.updates.values():
            if u.state == "failed":
                errors[u.task_id] = first_line(u.error)
    return errors


_MAX_JOBS_LOOKED_UP = 20


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
