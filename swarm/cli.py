"""`swarm`: join a cluster, look at it, submit work to it.

Every command that talks to a cluster takes `--broker` and `--cluster`, which also come from
`$SWARM_BROKER` / `$SWARM_CLUSTER` and the config file; without a broker, clients look for one over mDNS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from swarm.config import NodeConfig, load_config
from swarm.core.tracker import JobProgress
from swarm.errors import SwarmError
from swarm.jobspec import load_job_file, new_job_id, task_spec
from swarm.messages import PRIORITIES, SubmitJob, TaskUpdate
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
    submit = sub.add_parser("submit", help="submit work")
    submit_sub = submit.add_subparsers(dest="what", required=True)
    task = submit_sub.add_parser("task", help="one task")
    _common(task)
    task.add_argument("type")
    task.add_argument("--payload", default="{}", help="JSON object")
    task.add_argument("--priority", choices=PRIORITIES, default="normal")
    task.add_argument("--timeout", type=float)
    task.add_argument("--max-retries", type=int, default=3)
    task.add_argument("--require", action="append", default=[], metavar="KEY=VALUE")
    task.add_argument("--pending-timeout", type=float, help="fail if no member can run it for this long")
    task.add_argument("--job-id", help="idempotency key: resubmitting it never runs the task twice")
    task.add_argument("--wait", action="store_true")
    batch = submit_sub.add_parser("batch", help="a batch, chain or group from a JSON/YAML file")
    _common(batch)
    batch.add_argument("file", type=Path)
    batch.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    batch.add_argument("--job-id")
    batch.add_argument("--wait", action="store_true")

    mr = submit_sub.add_parser("mapreduce", help="a MapReduce job over local input files")
    _common(mr)
    mr.add_argument("--app", required=True, help="a .py file, or wordcount|indexer|grep|sort|groupby")
    mr.add_argument("--input", nargs="+", required=True, type=Path, metavar="FILE")
    mr.add_argument("--reduces", type=int, required=True, metavar="R")
    mr.add_argument("--output", type=Path, required=True, metavar="DIR")
    mr.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="passed to the app")
    mr.add_argument("--split-size", type=_size, help="cut inputs into splits of about SIZE (e.g. 64M)")
    mr.add_argument("--combiner", choices=("sum", "count", "min", "max"))
    mr.add_argument("--compress", action="store_true", help="compress intermediate runs")
    mr.add_argument("--max-retries", type=int, default=3)
    mr.add_argument("--timeout", type=float, help="per task")
    mr.add_argument("--job-id")
    mr.add_argument("--wait", action="store_true", help="show progress (the command always runs to the end)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    join = sub.add_parser("join", help="run a node on this device")
    _common(join)
    join.add_argument("--name")
    join.add_argument("--data-dir", type=Path)
    join.add_argument("--slots", type=int, help="tasks run at once (default: cores)")
    join.add_argument("--role")
    join.add_argument("--no-embedded-broker", action="store_true", help="never start a broker")
    join.add_argument("--api", metavar="HOST:PORT", help="where the HTTP API listens (default 127.0.0.1:0)")
    join.add_argument("--no-api", action="store_true", help="serve no HTTP API")
    join.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label tasks can require")
    join.add_argument(
        "--taint", action="append", metavar="KEY=VALUE:EFFECT", help="NoSchedule or PreferNoSchedule"
    )

    status = sub.add_parser("status", help="members, coordinator and epoch")
    _common(status)
    status.add_argument("--json", action="store_true")

    _add_submit(sub)

    tasks = sub.add_parser("tasks", help="list tasks and their states")
    _common(tasks)
    tasks.add_argument("--json", action="store_true")
    tasks.add_argument("--job")
    tasks.add_argument("--limit", type=int, default=200)

    from swarm.sim.cliargs import add_sim_parser

    add_sim_parser(sub)

    cancel = sub.add_parser("cancel", help="cancel a task or a job")
    _common(cancel)
    cancel.add_argument("id")
    add_trust_parsers(sub, _common)
    add_workflow_parsers(sub, _common)
    from swarm.cockpit.cli import add_cockpit_parser

    add_cockpit_parser(sub, _common)
    from swarm.demo.sales import add_demo_parser

    add_demo_parser(sub, _common)
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
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) or args.command == "join" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_dispatch(args))
    except SwarmError as exc:
        print(f"swarm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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
    handlers = {"status": _status, "submit": _submit, "tasks": _tasks, "cancel": _cancel, "quota": show_quota}
    from swarm.runtime.client import SwarmClient
    from swarm.runtime.identity import broker_login, client_credential

    credential = client_credential(config.cluster, args.token)
    url = await _client_broker(config, credential.broker_url or None)
    login = broker_login(config, credential)
    async with SwarmClient(url, credential, login=login, max_bytes=config.max_message_bytes) as client:
        if args.command == "submit" and args.what == "mapreduce":
            return await _mapreduce(client, url, args)
        return await handlers[args.command](client, args)


async def _client_broker(config: NodeConfig, known: str | None) -> str:
    from swarm.runtime.discovery import resolve_broker

    return await resolve_broker(config, known)


async def _join(config: NodeConfig, token: str | None) -> int:
    from swarm.runtime.identity import node_credential
    from swarm.runtime.shell import NodeShell
    from swarm.runtime.storage import NodeStorage

    storage = NodeStorage.open(config.data_dir)
    try:
        credential = await node_credential(config, storage, token, time.time())
    except BaseException:
        storage.close()
        raise
    log.info("node %s of cluster %r", credential.id, config.cluster)
    shell = NodeShell(config, storage, credential)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await shell.run(stop)
    return 0


async def _status(client: Any, args: argparse.Namespace) -> int:
    members = await client.watch_members(1.2)
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
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
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
    return 0


def _progress_printer(total: int) -> Any:
    tty = sys.stderr.isatty()

    def show(progress: JobProgress, fresh: list[TaskUpdate]) -> None:
        done = sum(1 for u in progress.updates.values() if u.state == "done")
        failed = len(progress.updates) - done
        width = 30
        filled = int(width * len(progress.updates) / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = f"[{bar}] {len(progress.updates)}/{total} done={done} failed={failed}"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


async def _submit(client: Any, args: argparse.Namespace) -> int:
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
    progress = await client.submit(
        job, wait=args.wait, on_update=_progress_printer(len(job.tasks)) if args.wait else None
    )
    if not args.wait:
        print(job.job_id)
        return 0
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return _print_outcome(job, progress)


def _print_outcome(job: SubmitJob, progress: JobProgress) -> int:
    if progress.rejected is not None:
        print(f"swarm: job {job.job_id} rejected: {progress.rejected}", file=sys.stderr)
        return 1
    updates = [progress.updates[t.task_id] for t in job.tasks]
    if job.kind == "task":
        u = updates[0]
        if u.state == "done":
            print(orjson.dumps(u.result).decode())
            return 0
        print(f"swarm: task {u.task_id} {u.state}: {u.error}", file=sys.stderr)
        return 1
    out = {
        "job_id": job.job_id,
        "ok": progress.ok,
        "tasks": [{"id": u.task_id, "state": u.state, "result": u.result, "error": u.error} for u in updates],
    }
    print(orjson.dumps(out).decode())
    return 0 if progress.ok else 1


async def _mapreduce(client: Any, url: str, args: argparse.Namespace) -> int:
    from swarm.mapreduce.app import resolve_app
    from swarm.mapreduce.plan import DEFAULT_SPLIT, MapReduceSpec
    from swarm.mapreduce.submit import MapReduceProgress, run_mapreduce

    spec = MapReduceSpec(
        app=resolve_app(args.app),
        inputs=tuple(args.input),
        reducers=args.reduces,
        params=dict(p.partition("=")[::2] for p in args.param),
        split_size=args.split_size or DEFAULT_SPLIT,
        combiner=args.combiner,
        compress=args.compress,
        max_retries=args.max_retries,
        timeout=args.timeout,
    )
    tty = sys.stderr.isatty()

    def show(p: MapReduceProgress) -> None:
        if args.wait:
            line = (
                f"map {p.maps_done}/{p.maps}  reduce {p.reduces_done}/{p.reduces}  "
                f"shuffled {p.shuffled / 1e6:.1f} MB  failed {p.failed}"
            )
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    job_id = args.job_id or new_job_id()
    progress, shown = await run_mapreduce(client, url, job_id, spec, args.output, show)
    if tty and args.wait:
        print(file=sys.stderr)
    failed = [u for u in progress.updates.values() if u.state != "done"]
    if progress.rejected or failed:
        reason = progress.rejected or f"{failed[0].task_id} {failed[0].state}: {failed[0].error}"
        print(f"swarm: mapreduce job {job_id} failed: {reason}", file=sys.stderr)
        return 1
    print(
        orjson.dumps(
            {
                "job_id": job_id,
                "output": str(args.output),
                "maps": shown.maps,
                "reduces": shown.reduces,
                "shuffled_bytes": shown.shuffled,
                "splits_read_locally": shown.read_locally,
                "outputs_written_locally": shown.written_locally,
            }
        ).decode()
    )
    return 0


async def _tasks(client: Any, args: argparse.Namespace) -> int:
    await asyncio.sleep(0.2)  # let the retained coordinator record arrive
    tasks = await client.tasks(args.limit, args.job)
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
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{'TASK':<32}{'TYPE':<14}{'STATE':<10}{'TRY':>4}  {'NODE':<14}REASON")
    for t in tasks:
        print(
            f"{t.task_id[:31]:<32}{t.type[:13]:<14}{t.state:<10}{t.attempt:>4}  {(t.node or '-'):<14}"
            f"{t.reason or ''}"
        )
    return 0


async def _cancel(client: Any, args: argparse.Namespace) -> int:
    await asyncio.sleep(0.2)
    error = await client.cancel(args.id)
    if error:
        print(f"swarm: {error}", file=sys.stderr)
        return 1
    print(f"cancel requested for {args.id}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
