"""Which scheduled runs are due: the pure planner the acting coordinator's node consults every second.

Exactly once per slot, across coordinator changes, comes from three facts, none of them a lock:

* a slot's run id is fixed by the slot (`cron.slot_run_id`), and the task engine never runs a job id
  twice (a job still known is only acknowledged again, a finished one's spec is refused);
* every node learns of every fired slot from the retained `RunStarted` records (`last_fired`), so a new
  coordinator continues after the last slot its predecessor fired, and a slot fired just before a crash
  is at worst submitted again under the same id;
* the catch-up policy (`schedule.catchup`: NONE, LATEST, ALL) bounds what a coordinator that was away
  fires for the slots it missed.

A ONCE schedule has a single slot, `schedule.startAt` (ISO-8601, with an offset or Z); MANUAL has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from swarm.workflow.cron import CronExpr, due_slots, parse_timezone, slot_run_id
from swarm.workflow.fields import DefinitionError
from swarm.workflow.model import Schedule

__all__ = ["Due", "Scheduled", "check_schedule", "due_runs", "once_slot"]


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A DAG version whose schedule may fire, and on whose behalf."""

    dag_id: str
    version: str
    schedule: Schedule
    created_at: float
    owner: str
    role: str


@dataclass(frozen=True, slots=True)
class Due:
    """A run to start now: its DAG, version, slot and the run id the slot fixes."""

    scheduled: Scheduled
    slot: float
    run_id: str


def once_slot(schedule: Schedule) -> float:
    """The instant of a ONCE schedule."""
    if not schedule.start_at:
        raise DefinitionError(
            "schedule.startAt", "a ONCE schedule names its instant (ISO-8601 with an offset)"
        )
    try:
        when = datetime.fromisoformat(schedule.start_at.replace("Z", "+00:00"))
    except ValueError:
        raise DefinitionError("schedule.startAt", f"not an ISO-8601 instant: {schedule.start_at!r}") from None
    if when.tzinfo is None:
        raise DefinitionError("schedule.startAt", "give an offset or Z: a bare local time is ambiguous")
    return when.timestamp()


def check_schedule(schedule: Schedule) -> None:
    """Raise `DefinitionError` (or `CronError`) for a schedule that cannot fire as written."""
    if schedule.type == "CRON":
        if not schedule.expression:
            raise DefinitionError("schedule.expression", "a CRON schedule needs an expression")
        CronExpr.parse(schedule.expression)
        parse_timezone(schedule.timezone)
    elif schedule.type == "ONCE":
        once_slot(schedule)


def due_runs(scheduled: Iterable[Scheduled], last_fired: Mapping[str, float], now: float) -> list[Due]:
    """Every run due at `now`, oldest slot first per DAG."""
    out: list[Due] = []
    for item in scheduled:
        schedule = item.schedule
        last = last_fired.get(item.dag_id)
        if schedule.type == "CRON" and schedule.expression:
            expr = CronExpr.parse(schedule.expression)
            slots = due_slots(expr, schedule.timezone, last, now, schedule.catchup, item.created_at)
        elif schedule.type == "ONCE":
            slot = once_slot(schedule)
            slots = [slot] if slot <= now and (last is None or last < slot) else []
        else:
            slots = []
        out.extend(Due(item, slot, slot_run_id(item.dag_id, slot)) for slot in slots)
    return out
