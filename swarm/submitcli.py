"""`swarm submit`, `swarm result` and `swarm cancel`: every outcome said in one line, never a hang.

A submission waits for a coordinator to accept or reject the job, at most `ACCEPT_WAIT` seconds unless
`--wait-for-cluster`: then, with no coordinator, the job's retained spec is taken back (so it does not run
later, unseen) and the command says so. A rejection is an error, with or without `--wait`. While a
`--wait` follows a job, the coordinator's task table is read every `POLL_EVERY` seconds, for the running
and queued counts and for why a task waits (an unmet requirement). Ctrl-C leaves the job running and says
how to get its result or cancel it; a second Ctrl-C within `SECOND_CTRL_C` seconds cancels it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import orjson

from swarm.core.tracker import JobProgress
from swarm.errors import SwarmError
from swarm.ids import new_job_id as _new_job_id
from swarm.messages import SubmitJob, TaskSummary, TaskUpdate
from swarm.progress import Counts, ProgressDisplay

__all__ = [
    "ACCEPT_WAIT",
    "NoCoordinator",
    "check_requirements",
    "first_line",
    "follow",
    "print_json",
    "run_cancel",
    "run_mapreduce_command",
    "run_result",
    "submit_job",
]

ACCEPT_WAIT = 5.0
POLL_EVERY = 2.0
SECOND_CTRL_C = 3.0
#: Exit status when no coordinator answers (distinct from a failed job's 1 and a usage error's 2).
NO_COORDINATOR = 3
#: Exit status of `swarm result` for a job still running.
UNFINISHED = 4


class NoCoordinator(SwarmError):
    """No coordinator answered: no node runs, or none is elected yet."""


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def first_line(error: str | None) -> str:
    """The line of an error a person reads first (the exception; the traceback stays in `--json`)."""
    return (error or "").strip().splitlines()[0] if (error or "").strip() else "no error given"


def check_requirements(job: SubmitJob, members: dict[str, Any]) -> None:
    """Refuse a job whose requirements no member that reports itself can meet, naming what they report.

    Members are `MemberView`s heard over a moment; with none heard nothing is checked (the coordinator
    still decides, and a node may join later)."""
    from swarm.core.placement import unmet

    beats = {mid: v.heartbeat for mid, v in members.items() if v.heartbeat is not None and v.gone is None}
    if not beats:
        return
    for task in job.tasks:
        reasons = [unmet(task.requirements, mid, hb) for mid, hb in beats.items()]
        if all(r is not None for r in reasons):
            caps = [hb.caps for hb in beats.values()]
            seen = (
                f"platforms {sorted({c.platform for c in caps})}, arches {sorted({c.arch for c in caps})}, "
                f"at most {max(c.cores for c in caps)} cores, {max(c.memory_mb for c in caps) / 1024:.1f} GB"
            )
            raise SwarmError(
                f"task {task.task_id}: no member can meet {reasons[0]} (members report {seen}); "
                "fix --require, or give --wait-for-cluster to wait for such a member"
            )


async def submit_job(client: Any, job: SubmitJob, args: argparse.Namespace) -> int:
    """Submit `job` as `args` say (`--wait`, `--json`, `--wait-for-cluster`) and report the outcome."""
    wait_for_cluster = getattr(args, "wait_for_cluster", False)
    if getattr(args, "job_id", None):
        await _check_reuse(client, job)
    if not wait_for_cluster and any(t.requirements != type(t.requirements)() for t in job.tasks):
        check_requirements(job, await client.watch_members(0.3))
    display = ProgressDisplay(sys.stderr, sys.stderr.isatty(), time.monotonic())
    heard = asyncio.Event()

    def on_update(progress: JobProgress, fresh: list[TaskUpdate]) -> None:
        heard.set()

    submitting = asyncio.ensure_future(client.submit(job, wait=args.wait, on_update=on_update))
    try:
        await _accepted(client, job, submitting, heard, wait_for_cluster, display)
        progress: JobProgress = client.tracker.jobs[job.job_id]
        if progress.rejected is not None:
            return _rejected(job, progress, args)
        if not args.wait:
            await submitting
            if args.json:
                print_json({"job_id": job.job_id, "accepted": True, "tasks": len(job.tasks)})
            else:
                print(job.job_id)
            return 0
        display.say(f"job {job.job_id} accepted: {len(job.tasks)} task(s)")
        progress = await follow(client, job, display, submitting)
    finally:
        if not submitting.done():
            submitting.cancel()
    display.end()
    return print_outcome(job, progress, args.json)


async def _accepted(
    client: Any,
    job: SubmitJob,
    submitting: asyncio.Future[JobProgress],
    heard: asyncio.Event,
    wait_for_cluster: bool,
    display: ProgressDisplay,
) -> None:
    """Wait until a coordinator accepts or rejects the job (see the module docstring)."""
    heard_task = asyncio.ensure_future(heard.wait())
    try:
        told = False
        while not submitting.done() and not heard.is_set():
            waiting: set[asyncio.Future[Any]] = {submitting, heard_task}
            await asyncio.wait(waiting, timeout=ACCEPT_WAIT, return_when=asyncio.FIRST_COMPLETED)
            if submitting.done() or heard.is_set():
                break
            if not wait_for_cluster:
                submitting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await submitting
                await client.withdraw(job.job_id)
                raise NoCoordinator(
                    f"no coordinator answered within {ACCEPT_WAIT:g}s: is a node running (`swarm join`)? "
                    f"Job {job.job_id} was withdrawn; give --wait-for-cluster to wait for a node instead"
                )
            if not told:
                display.say(f"no coordinator yet; job {job.job_id} waits for one (--wait-for-cluster)")
                told = True
        if submitting.done():
            submitting.result()  # a refusal raised before sending
    except asyncio.CancelledError:
        # Ctrl-C before any coordinator took the job: take it back, so it does not run later unseen.
        if not heard.is_set():
            submitting.cancel()
            await asyncio.shield(client.withdraw(job.job_id))
        raise
    finally:
        heard_task.cancel()


async def _check_reuse(client: Any, job: SubmitJob) -> None:
    """An explicit job id that names other work is refused while that job runs (its spec is retained);
    resubmitting the id of a finished job returns its earlier result, which is said rather than refused
    (documented in docs/jobs.md)."""
    old, progress = await client.fetch_job(job.job_id, listen=0.3)
    ran = progress.updates and (old is None or progress.finished)
    if old is not None and old.tasks != job.tasks and not ran:
        raise SwarmError(
            f"job id {job.job_id} is in use by a running job with other tasks; choose another --job-id "
            f"(`swarm result {job.job_id}` shows that job)"
        )
    if ran:
        print(
            f"swarm: job id {job.job_id} already ran; this shows its earlier result and runs nothing "
            "(choose another --job-id to run this work)",
            file=sys.stderr,
        )


def _rejected(job: SubmitJob, progress: JobProgress, args: argparse.Namespace) -> int:
    if args.json:
        print_json({"job_id": job.job_id, "accepted": False, "rejected": progress.rejected})
    else:
        print(f"swarm: job {job.job_id} rejected: {progress.rejected}", file=sys.stderr)
    return 1


def _counts(job: SubmitJob, progress: JobProgress, rows: list[TaskSummary]) -> Counts:
    done = sum(1 for u in progress.updates.values() if u.state == "done")
    failed = len(progress.updates) - done
    open_rows = [r for r in rows if r.task_id not in progress.updates]
    running = sum(1 for r in open_rows if r.state == "running")
    return Counts(len(job.tasks), done, failed, running, len(job.tasks) - len(progress.updates) - running)


async def follow(
    client: Any, job: SubmitJob, display: ProgressDisplay, following: asyncio.Future[JobProgress]
) -> JobProgress:
    """Follow an accepted job to its end, showing progress and why tasks wait; Ctrl-C as the module
    docstring says."""
    interrupts: list[float] = []
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_sigint() -> None:
        interrupts.append(time.monotonic())
        if main is not None:
            main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    rows: list[TaskSummary] = []
    said: set[str] = set()
    try:
        while not following.done():
            progress = client.tracker.jobs[job.job_id]
            note = next(
                (f"{r.task_id}: {r.reason}" for r in rows if r.reason and r.state in ("queued", "waiting")),
                "",
            )
            if note and note not in said:
                said.add(note)
                display.say(f"waiting: {note}")
            display.show(_counts(job, progress, rows), time.monotonic())
            await asyncio.wait({following}, timeout=POLL_EVERY)
            with contextlib.suppress(TimeoutError, SwarmError):
                rows = await client.tasks(len(job.tasks) + 10, job.job_id, timeout=1.0)
        progress = following.result()
        display.show(_counts(job, progress, []), time.monotonic())
        return progress
    except asyncio.CancelledError:
        if not interrupts:
            raise
        await _interrupted(client, job, display, interrupts)
        raise KeyboardInterrupt from None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


async def _interrupted(
    client: Any, job: SubmitJob, display: ProgressDisplay, interrupts: list[float]
) -> None:
    """Ctrl-C during `--wait`: the job goes on; a second Ctrl-C soon after cancels it."""
    main = asyncio.current_task()
    if main is not None:
        main.uncancel()
    display.say(
        f"swarm: job {job.job_id} keeps running; `swarm result {job.job_id}` shows it later. "
        f"Press Ctrl-C again within {SECOND_CTRL_C:g}s to cancel it."
    )
    second = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, second.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(second.wait(), SECOND_CTRL_C)
    if second.is_set():
        refusal = await client.cancel(job.job_id)
        display.say(f"swarm: {refusal}" if refusal else f"swarm: job {job.job_id} cancelled")


def print_outcome(job: SubmitJob, progress: JobProgress, as_json: bool) -> int:
    """Print a finished job's results (stdout) and failures (stderr, first line of each error)."""
    updates = [progress.updates.get(t.task_id) for t in job.tasks]
    ok = progress.ok
    if as_json:
        print_json(_job_json(job.job_id, job, progress))
        return 0 if ok else 1
    single = updates[0] if job.kind == "task" else None
    if single is not None:
        u = single
        if u.state == "done":
            print(orjson.dumps(u.result).decode())
            return 0
        print(
            f"swarm: task {u.task_id} {u.state} (attempt {u.attempt}): {first_line(u.error)}", file=sys.stderr
        )
        return 1
    final = [u for u in updates if u is not None]
    for f in final:
        if f.state != "done":
            print(f"swarm: task {f.task_id} {f.state}: {first_line(f.error)}", file=sys.stderr)
    rows = [
        {"id": f.task_id, "state": f.state, "result": f.result, "error": f.error and first_line(f.error)}
        for f in final
    ]
    print(orjson.dumps({"job_id": job.job_id, "ok": ok, "tasks": rows}).decode())
    return 0 if ok else 1


def _job_json(job_id: str, job: SubmitJob | None, progress: JobProgress) -> dict[str, Any]:
    ids = [t.task_id for t in job.tasks] if job is not None else sorted(progress.updates)
    tasks = []
    for task_id in ids:
        u = progress.updates.get(task_id)
        tasks.append(
            {
                "id": task_id,
                "state": u.state if u else "unfinished",
                "attempt": u.attempt if u else None,
                "node": u.node if u else None,
                "result": u.result if u else None,
                "error": u.error if u else None,
                "reason": first_line(u.error) if u and u.state != "done" else None,
            }
        )
    finished = all(t["state"] != "unfinished" for t in tasks)
    ok = finished and all(t["state"] == "done" for t in tasks)
    return {"job_id": job_id, "finished": finished, "ok": ok, "tasks": tasks}


async def run_result(client: Any, args: argparse.Namespace) -> int:
    """`swarm result JOB`: what the job's retained commits say, from any machine, at any time."""
    job, progress = await client.fetch_job(args.job, listen=args.listen)
    if job is None and not progress.updates:
        print(
            f"swarm: no job {args.job!r} on the broker (never submitted, or its record expired)",
            file=sys.stderr,
        )
        return 1
    out = _job_json(args.job, job, progress)
    if args.json:
        print_json(out)
    else:
        for t in out["tasks"]:
            if t["state"] == "done":
                print(f"{t['id']}\tdone\t{orjson.dumps(t['result']).decode()}")
            else:
                print(f"{t['id']}\t{t['state']}\t{t['reason'] or ''}")
    if not out["finished"]:
        return UNFINISHED
    return 0 if out["ok"] else 1


async def run_cancel(client: Any, args: argparse.Namespace) -> int:
    """`swarm cancel ID`: says whether it was cancelled, already finished, or unknown."""
    target = args.id
    rows = await client.tasks(1000, None)
    mine = [r for r in rows if target in (r.task_id, r.job_id)]
    open_rows = [r for r in mine if r.state not in ("done", "failed", "cancelled", "skipped")]
    if mine and not open_rows:
        states = sorted({r.state for r in mine})
        message = f"{target} already finished ({', '.join(states)}): nothing to cancel"
        if args.json:
            print_json({"id": target, "cancelled": False, "reason": message})
        else:
            print(f"swarm: {message}", file=sys.stderr)
        return 1
    error = await client.cancel(target)
    if args.json:
        print_json({"id": target, "cancelled": error is None, "reason": error})
    elif error:
        print(f"swarm: {error}", file=sys.stderr)
    else:
        print(f"cancelled {target}")
    return 1 if error else 0


async def run_mapreduce_command(client: Any, url: str, args: argparse.Namespace) -> int:
    """`swarm submit mapreduce`: check, run to the end (the submitter serves inputs), summarise."""
    from swarm.mapreduce.app import resolve_app
    from swarm.mapreduce.plan import MapReduceSpec
    from swarm.mapreduce.submit import MapReduceProgress, run_mapreduce

    spec = MapReduceSpec(
        app=resolve_app(args.app),
        inputs=tuple(args.input),
        reducers=args.reduces,
        params=dict(p.partition("=")[::2] for p in args.param),
        split_size=args.split_size or "auto",
        combiner=args.combiner,
        compress=args.compress,
        max_retries=args.max_retries,
        timeout=args.timeout,
    )
    if not args.wait_for_cluster:
        # A MapReduce submitter serves the inputs until the end: without a coordinator it would wait
        # forever. `tasks` raises TimeoutError ("no coordinator answered"), which `main` turns into a line.
        await client.tasks(1, None, timeout=5.0)
    display = ProgressDisplay(sys.stderr, sys.stderr.isatty(), time.monotonic(), label="mapreduce ")
    job_id = args.job_id or _new_job_id()
    if args.wait:
        display.say(f"job {job_id}")

    def show(p: MapReduceProgress) -> None:
        if args.wait:
            total = p.maps + p.reduces
            counts = Counts(total, p.maps_done + p.reduces_done, p.failed)
            display.show(
                counts,
                time.monotonic(),
                f"map {p.maps_done}/{p.maps} reduce {p.reduces_done}/"
                f"{p.reduces} shuffled {p.shuffled / 1e6:.1f} MB",
            )

    progress, shown = await run_mapreduce(client, url, job_id, spec, args.output, show)
    display.end()
    failed = [u for u in progress.updates.values() if u.state != "done"]
    summary = {
        "job_id": job_id,
        "ok": not (progress.rejected or failed),
        "output": str(args.output),
        "maps": shown.maps,
        "reduces": shown.reduces,
        "shuffled_bytes": shown.shuffled,
        "splits_read_locally": shown.read_locally,
        "outputs_written_locally": shown.written_locally,
    }
    if progress.rejected or failed:
        reason = progress.rejected or f"{failed[0].task_id} {failed[0].state}: {first_line(failed[0].error)}"
        summary["error"] = reason
        if args.json:
            print_json(summary)
        print(f"swarm: mapreduce job {job_id} failed: {reason}", file=sys.stderr)
        return 1
    if args.json:
        print_json(summary)
    else:
        print(orjson.dumps(summary).decode())
    return 0
