"""The submitter's side of a MapReduce job: check, plan, serve the inputs, receive the outputs.

Inputs stay on the submitting machine and no shared filesystem is assumed: the submitter runs a data
server from which map tasks fetch their splits and to which reduce tasks upload `mr-out-<r>` (written
atomically into the output directory); tasks on the submitter's own machine may use the files
directly instead (`locality`). So the submitter stays until the job is over.

The server is the job's alone: it serves the inputs and accepts the outputs only from requests that
present the job's capability token, accepts no name but `mr-out-0` ... `mr-out-<R-1>` for upload, and
no more bytes of them than the job's output budget (`plan.upload_budget`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarm.core.tracker import JobProgress
from swarm.mapreduce.app import load_app
from swarm.mapreduce.locality import file_identity
from swarm.mapreduce.plan import (
    MapReduceSpec,
    auto_split_size,
    build_job,
    check_and_sample,
    check_job_id,
    new_capability,
    output_name,
    plan_splits,
    upload_budget,
)
from swarm.messages import TaskUpdate
from swarm.runtime.client import SwarmClient
from swarm.runtime.dataserver import DataServer
from swarm.runtime.netaddr import advertised_host

__all__ = ["MapReduceProgress", "clear_old_outputs", "run_mapreduce"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MapReduceProgress:
    """What `--wait` shows."""

    maps: int
    reduces: int
    maps_done: int = 0
    reduces_done: int = 0
    failed: int = 0
    shuffled: int = 0
    read_locally: int = 0  # splits that maps read from the input file itself (see `locality`)
    written_locally: int = 0  # outputs that reduces wrote into the output directory themselves

    def update(self, fresh: list[TaskUpdate]) -> None:
        """Count newly committed tasks."""
        for u in fresh:
            is_map = u.task_id.rpartition(".")[2].startswith("m")
            if u.state != "done":
                self.failed += 1
            elif is_map:
                self.maps_done += 1
                self.shuffled += sum(run["bytes"] for run in (u.result or {}).get("runs", []))
                self.read_locally += bool((u.result or {}).get("local_input"))
            else:
                self.reduces_done += 1
                self.written_locally += bool((u.result or {}).get("local_output"))


def clear_old_outputs(output: Path) -> list[Path]:
    """Remove the `mr-out-*` files an earlier job left in `output` and return them.

    Reducers replace `mr-out-0` ... `mr-out-<R-1>`, but an earlier run with more reducers leaves its
    higher-numbered files, which a reader of `mr-out-*` would take for this job's output."""
    old = sorted(p for p in output.glob("mr-out-*") if p.is_file() or p.is_symlink())
    for path in old:
        path.unlink()
    return old


async def run_mapreduce(
    client: SwarmClient,
    broker_url: str,
    job_id: str,
    spec: MapReduceSpec,
    output: Path,
    on_progress: Callable[[MapReduceProgress], None] | None = None,
) -> tuple[JobProgress, MapReduceProgress]:
    """Run the job to its end; every check that can fail does so before any task starts."""
    check_job_id(job_id)
    app = load_app(spec.app, spec.params).with_combiner(spec.combiner)
    boundaries = check_and_sample(spec, app)
    split_size = spec.split_size
    if split_size == "auto":
        slots = await client.member_slots()
        split_size = auto_split_size(sum(path.stat().st_size for path in spec.inputs), slots)
        log.info("splits of up to %d bytes for %d slot(s)", split_size, slots)
    splits = plan_splits(spec.inputs, split_size, app.record_size)
    budget = upload_budget(spec)
    token = new_capability()
    output.mkdir(parents=True, exist_ok=True)
    stale = clear_old_outputs(output)
    if stale:
        log.warning(
            "removed %d mr-out-* file(s) of an earlier run from %s, so that the output is this job's alone",
            len(stale),
            output,
        )
    aliases = {f"in/{k}": path.resolve() for k, path in enumerate(spec.inputs)}
    host = advertised_host(broker_url)
    shown = MapReduceProgress(len(splits), spec.reducers)

    def on_update(_: JobProgress, fresh: list[TaskUpdate]) -> None:
        shown.update(fresh)
        if on_progress is not None:
            on_progress(shown)

    server = DataServer(
        output,
        host=host,
        job=job_id,
        capabilities={job_id: token},
        allow_upload=True,
        # One output may be the whole budget (a single reducer's sort), so the budget caps each too.
        max_upload_bytes=budget,
        upload_budget=budget,
        upload_names=[output_name(r) for r in range(spec.reducers)],
        aliases=aliases,
    )
    async with server:
        job = build_job(job_id, spec, splits, server.url, boundaries, file_identity(output), token=token)
        progress = await client.submit(job, wait=True, on_update=on_update)
    if server.counters:
        log.warning("the job's data server refused requests: %s", server.counters)
    return progress, shown
