"""Fuzzing the node machine: any message the codec lets through must leave it running and consistent.

A node is driven through random sequences of events: decoded envelopes of every body type (senders,
epochs, topics and ids drawn from small pools, so that messages meet the state earlier ones built: the
same jobs, tasks, members and epochs), ticks of the clock, outcomes of the attempts it runs, reconnects.
After every step nothing may have escaped `handle`, nothing may have failed inside it (the node drops an
event whose handler raises, but counts it and tells it in its story with the exception, and that is a bug
to find here), `validate()` must
hold, and every message the node publishes must be one its peers can decode. Four starting points: a
fresh member, a worker with attempts from a coordinator, a lone coordinator, and a coordinator with two
workers and a job in flight.

Each envelope goes through `encode` and `decode`, as on the wire, so only what the codec accepts reaches
the machine (the codec has fuzz tests of its own). Bugs this fuzzer found have tests of their own at the
end.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from swarm.codec import decode, encode
from swarm.core.config import CoreConfig
from swarm.core.events import (
    Connected,
    Effect,
    Event,
    MessageReceived,
    Publish,
    RetainedCleared,
    TaskFinished,
    Tick,
)
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.devices.capabilities import Capabilities
from swarm.devices.profiles import simulated_capabilities
from swarm.errors import ProtocolError
from swarm.messages import (
    BODY_TYPES,
    Assign,
    Assignment,
    Body,
    Cancel,
    CancelAttempt,
    Claim,
    Commit,
    CoordinatorAnnounce,
    Envelope,
    Heartbeat,
    Results,
    SubmitJob,
    TaskRef,
    TaskResult,
    TaskSpec,
    TaskUpdate,
    WorkerReport,
)

CFG = CoreConfig()
CLUSTER = "c"
SELF = "a"
NODES = ("a", "b", "c", "d")
JOBS = ("j0", "j1", "j2")
TASKS = ("t0", "t1", "t2", "t3", "t4")
CAPS = simulated_capabilities("a")
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

# --- values from small pools ---------------------------------------------------------------------

_SMALL_INT = st.one_of(st.integers(-1, 6), st.sampled_from((0, 1, 2**31, 2**53 - 1, -(2**53) + 1)))
_FLOAT = st.one_of(st.floats(-1.0, 120.0, allow_nan=False), st.sampled_from((0.0, 1e-9, 1e15, -1e15)))
_TEXT = st.sampled_from(("", "x", "echo", "a/b", "lost", "left", "é" * 3))
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | _TEXT,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_TEXT, inner, max_size=2),
    max_leaves=4,
)
_TASK_OR_JOB = st.sampled_from(TASKS + JOBS)

#: Field name -> values, for fields whose values must meet each other to matter.
_BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "task_id": st.sampled_from(TASKS),
    "job_id": st.sampled_from(JOBS),
    "after": st.sampled_from(TASKS),
    "target": _TASK_OR_JOB,
    "coordinator": st.sampled_from(NODES),
    "standbys": st.sampled_from(NODES),
    "node": st.sampled_from(NODES),
    "exclude": st.sampled_from(NODES),
    "ref": st.sampled_from(("a.1", "a.2", "b.1", "m1")),
    "type": st.sampled_from(("echo", "sleep", "python_eval", "command")),
    "role": st.sampled_from(("", "viewer", "submitter", "operator", "admin", "member", "worker")),
    "by": st.sampled_from(("", "u-1", "u-2")),
    "submitted_by": st.sampled_from(("", "u-1", "u-2")),
    "team": st.sampled_from(("", "lab")),
    "isolation": st.sampled_from((None, "process", "user", "sandbox")),
    "platform": st.sampled_from((None, "linux", "android")),
    "arch": st.sampled_from((None, "x86_64", "arm64")),
    "epoch": st.integers(0, 6),
    "attempt": st.integers(-1, 4),
    "priority": st.integers(-1, 5),
    "slots": st.integers(0, 4),
    "min_cores": st.integers(-1, 8),
    "max_retries": st.integers(-1, 3),
}


def _strategy(hint: Any, name: str) -> st.SearchStrategy[Any]:
    if name in _BY_NAME:
        pooled = _BY_NAME[name]
        if typing.get_origin(_plain(hint)) is tuple:
            return st.lists(pooled, max_size=3).map(tuple)
        if _optional(hint) and name not in ("isolation", "platform", "arch"):
            return st.none() | pooled
        return pooled
    hint = _plain(hint)
    if hint is Any:
        return _JSON
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: _SMALL_INT,
        float: _FLOAT,
        str: _TEXT,
        bool: st.booleans(),
    }
    if hint in simple:
        return simple[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else _strategy(a, name) for a in args])
    if origin is tuple:
        return st.lists(_strategy(args[0], name), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(_TEXT, _JSON, max_size=2)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if dataclasses.is_dataclass(hint):
        return _instances(hint)
    raise TypeError(f"no strategy for {hint!r}")


def _plain(hint: Any) -> Any:
    """The type under `Annotated[...]` (ids are plain strings here: the pools hold valid ones)."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


#: Devices the heartbeats describe (capabilities check their own ranges, so they come from here).
_DEVICES = st.sampled_from(
    (
        CAPS,
        dataclasses.replace(CAPS, cores=1, memory_mb=512, battery_percent=40.0, charging=False, role="phone"),
        dataclasses.replace(CAPS, cores=16, memory_mb=65536, gpu=True, role="server"),
    )
)


def _instances(cls: Any) -> st.SearchStrategy[Any]:
    """Instances of a dataclass; a field keeps its default half the time."""
    if cls is Capabilities:
        return _DEVICES
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        drawn = _strategy(hints[f.name], f.name)
        if f.default is not dataclasses.MISSING:
            fields[f.name] = st.just(f.default) | drawn
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = st.builds(f.default_factory) | drawn
        else:
            fields[f.name] = drawn

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values = {name: draw(strategy) for name, strategy in fields.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError):
            reject()  # a value the class itself refuses is no message

    return build()


BODIES = {tag: _instances(cls) for tag, cls in BODY_TYPES.items()}


def _topic_for(body: Body, sender: str, epoch: int) -> str:
    """The topic a body of this type arrives on from `sender`."""
    job = getattr(body, "job_id", None) or "j0"
    return {
        "heartbeat": f"node/{sender}/hb",
        "node_gone": f"node/{sender}/hb",
        "claim": "election",
        "coordinator": "coord",
        "submit_job": f"job/{job}/spec",
        "commit": f"job/{job}/commits/{epoch}.0",
        "job_state": f"job/{job}/state",
        "assign": f"node/{SELF}/in",
        "cancel_attempt": f"node/{SELF}/in",
        "sync": f"node/{SELF}/in",
    }.get(type(body).TAG, "coord/in")


_ANY_TOPIC = st.sampled_from(
    (
        "node/a/in",
        "node/b/in",
        "node/b/hb",
        "node/a/hb",
        "election",
        "coord",
        "coord/in",
        "job/j0/spec",
        "job/j1/state",
        "job/j0/commits/1.0",
        "job/j2/events",
        "x",
    )
)


@st.composite
def _message(draw: st.DrawFn, node: NodeMachine) -> MessageReceived | None:
    """An envelope as the wire would bring it, often shaped to pass the node's checks."""
    tag = draw(st.sampled_from(sorted(BODIES)))
    body = draw(BODIES[tag])
    e = node.election
    plausible = draw(st.booleans())
    if plausible:
        sender = draw(st.sampled_from([n for n in (e.coordinator, SELF, "b", "c") if n is not None]))
        epoch = draw(st.sampled_from((e.epoch, e.epoch + 1, max(e.epoch - 1, 0))))
        if isinstance(body, CoordinatorAnnounce):
            body = dataclasses.replace(body, coordinator=sender)
        topic = _topic_for(body, sender, epoch)
    else:
        sender = draw(st.sampled_from(NODES))
        epoch = draw(st.integers(0, 8))
        topic = draw(_ANY_TOPIC)
    env = Envelope(1, CLUSTER, sender, epoch, draw(st.sampled_from(("m1", "m2", "a.1"))), body)
    try:
        return MessageReceived(topic, decode(encode(env), cluster=CLUSTER))
    except ProtocolError:
        return None  # not a message any node would be handed


_KINDS = ("ok", "error", "retry", "fatal", "timeout", "crash", "refused", "invalid", "lost", "cancelled")


@st.composite
def _informed(draw: st.DrawFn, node: NodeMachine) -> MessageReceived | None:
    """A worker's `Results` or `WorkerReport` about attempts the coordinator really handed out, so that
    messages reach the commit and retry paths rather than being dropped as stale."""
    scheduler = node.scheduler
    assert scheduler is not None
    recs = sorted(scheduler.tasks.values(), key=lambda r: r.task_id)
    if not recs:
        return None
    rec = draw(st.sampled_from(recs))
    sender = rec.node if rec.node is not None and draw(st.booleans()) else draw(st.sampled_from(NODES))
    attempt = rec.attempt + draw(st.sampled_from((0, 0, 0, 1, -1)))
    result = TaskResult(
        rec.task_id,
        rec.job_id,
        attempt,
        draw(st.sampled_from(_KINDS)),
        result=draw(_JSON),
        error=draw(st.none() | _TEXT),
        retry_after=draw(st.none() | _FLOAT),
        started_at=draw(_FLOAT),
        finished_at=draw(_FLOAT),
    )
    if draw(st.booleans()):
        body: Body = Results((result,))
    else:
        held = tuple(
            TaskRef(r.task_id, r.job_id, r.attempt) for r in recs if r.node == sender and draw(st.booleans())
        )
        body = WorkerReport(node.election.epoch, held, (result,) if draw(st.booleans()) else ())
    env = Envelope(1, CLUSTER, sender, node.election.epoch, "m1", body)
    return MessageReceived("coord/in", decode(encode(env), cluster=CLUSTER))


@st.composite
def _from_coordinator(draw: st.DrawFn, node: NodeMachine) -> MessageReceived | None:
    """What the acting coordinator tells this worker about attempts it holds or ran: cancel them, assign
    them again under another attempt number (a new coordinator counts attempts from scratch)."""
    e = node.election
    coordinator = e.coordinator if e.coordinator not in (None, SELF) else draw(st.sampled_from(NODES[1:]))
    known = sorted(
        {(t, a) for t, a in node.worker.running} | {(t, a.attempt) for t, a in node.worker.held.items()}
    )
    task_id, attempt = draw(st.sampled_from(known)) if known else (draw(st.sampled_from(TASKS)), 1)
    attempt += draw(st.sampled_from((0, 1, -1, -2)))
    body: Body
    if draw(st.booleans()):
        body = CancelAttempt(task_id, attempt)
    else:
        acked = (TaskRef(task_id, "j0", attempt),) if draw(st.booleans()) else ()
        body = Assign((Assignment(task_id, "j0", attempt, "echo", {}),), acked)
    env = Envelope(1, CLUSTER, coordinator, e.epoch, "m1", body)
    return MessageReceived(f"node/{SELF}/in", decode(encode(env), cluster=CLUSTER))


@st.composite
def _event(draw: st.DrawFn, node: NodeMachine, published: list[Publish]) -> tuple[Event | None, float]:
    """One step: (event, seconds the clock moves first). `published` are the node's own recent
    messages, which the broker echoes back to it."""
    kinds = ("message",) * 6 + ("result", "result", "echo", "echo", "tick", "tick", "finish", "other")
    kind = draw(st.sampled_from(kinds))
    if kind == "echo" and published:
        own = draw(st.sampled_from(published))
        env = Envelope(1, CLUSTER, SELF, own.epoch, "m1", own.body)
        return MessageReceived(own.topic, decode(encode(env), cluster=CLUSTER)), 0.01
    if kind == "message":
        return draw(_message(node)), draw(st.sampled_from((0.0, 0.01, 0.1)))
    if kind == "result" and node.scheduler is not None:
        return draw(_informed(node)), draw(st.sampled_from((0.0, 0.01, 0.1)))
    if kind == "result":
        return draw(_from_coordinator(node)), draw(st.sampled_from((0.0, 0.01, 0.1)))
    if kind == "tick":
        return Tick(), draw(st.sampled_from((0.05, 0.5, 1.0, 3.5, 30.0, 400.0)))
    if kind == "finish" and node.worker.running:
        task_id, attempt = draw(st.sampled_from(sorted(node.worker.running)))
        held = node.worker.held.get(task_id)
        result = TaskResult(
            task_id,
            held.job_id if held else "j0",
            attempt,
            draw(
                st.sampled_from(("ok", "error", "retry", "fatal", "timeout", "refused", "lost", "cancelled"))
            ),
            result=draw(_JSON),
            error=draw(st.none() | _TEXT),
            started_at=0.0,
            finished_at=draw(_FLOAT),
        )
        return TaskFinished(result), 0.05
    if kind == "other":
        other: Event = draw(
            st.sampled_from((Connected(), RetainedCleared("job/j0/spec"), RetainedCleared("x")))
        )
        return other, 0.05
    return Tick(), 0.05


# --- starting points -----------------------------------------------------------------------------


def _fresh() -> tuple[NodeMachine, float]:
    node = NodeMachine(
        SELF, SELF, CFG, random.Random(0), lambda spec: None, DeviceStatus(CAPS, 0.1, 2048), 0, 0.0
    )
    return node, 0.0


def _deliver(node: NodeMachine, topic: str, sender: str, epoch: int, body: Body, now: float) -> list[Effect]:
    return node.handle(MessageReceived(topic, Envelope(1, CLUSTER, sender, epoch, f"m{now}", body)), now)


def _coordinator() -> tuple[NodeMachine, float]:
    node, now = _fresh()
    claims: list[Claim] = []
    while not claims:
        now += CFG.tick_interval
        claims = [
            e.body for e in node.handle(Tick(), now) if isinstance(e, Publish) and isinstance(e.body, Claim)
        ]
    _deliver(node, "election", SELF, claims[0].epoch, claims[0], now)
    assert node.scheduler is not None
    return node, now


def _busy_coordinator() -> tuple[NodeMachine, float]:
    node, now = _coordinator()
    epoch = node.election.epoch
    for member in ("b", "c"):
        hb = Heartbeat(member, dataclasses.replace(CAPS, hostname=member), 2, 0, 0.1, 2048, 1)
        _deliver(node, f"node/{member}/hb", member, epoch, hb, now)
    tasks = (
        TaskSpec("t0", "echo", {"m": 1}),
        TaskSpec("t1", "echo", {}, after=("t0",), pipe=True),
        TaskSpec("t2", "sleep", {"seconds": 1}, timeout=5.0),
        TaskSpec("t3", "echo", {}, priority=0),
    )
    now += CFG.takeover_grace + 0.1
    _deliver(node, "job/j0/spec", "u-1", 0, SubmitJob("j0", tasks, submitted_by="u-1", role="submitter"), now)
    node.handle(Tick(), now)
    return node, now


def _worker() -> tuple[NodeMachine, float]:
    node, now = _fresh()
    now += 0.1
    _deliver(node, "election", "b", 1, Claim(1), now)
    _deliver(node, "coord", "b", 1, CoordinatorAnnounce(1, "b", ("a",)), now)
    work = tuple(Assignment(t, "j0", 1, "echo", {"i": i}) for i, t in enumerate(TASKS[:3]))
    _deliver(node, f"node/{SELF}/in", "b", 1, Assign(work), now)
    return node, now


STARTS = {"fresh": _fresh, "worker": _worker, "coordinator": _coordinator, "busy": _busy_coordinator}


# --- the property --------------------------------------------------------------------------------


def _check(node: NodeMachine, effects: list[Effect], story: list[str]) -> None:
    where = "\n  ".join(story[-12:])
    # Taken after every step, as the shell does: an entry with an exception is one the core swallowed.
    swallowed = [entry.exc for entry in node.take_story()[0] if entry.exc is not None]
    if swallowed:
        raise AssertionError(f"the core swallowed an exception after:\n  {where}") from swallowed[0]
    assert not node.metrics.get("handler_errors"), where
    node.validate()
    # The other half of `validate`'s "scheduler outlived its epoch": acting means scheduling.
    if not node.left:
        acting, scheduling = node.election.acting_epoch is not None, node.scheduler is not None
        assert acting == scheduling, f"acting epoch {node.election.acting_epoch} without a scheduler: {where}"
    if node.scheduler is not None:
        node.scheduler.validate(everything=True)
    for effect in effects:
        if isinstance(effect, Publish):
            env = Envelope(1, CLUSTER, SELF, effect.epoch, "m1", effect.body)
            try:
                decode(encode(env), cluster=CLUSTER)
            except Exception as exc:
                raise AssertionError(
                    f"published what peers cannot read: {effect!r}\nafter:\n  {where}"
                ) from exc


@pytest.mark.parametrize("start", sorted(STARTS))
@FUZZ
@given(data=st.data())
def test_random_messages_never_break_the_node(start: str, data: st.DataObject) -> None:
    node, now = STARTS[start]()
    story: list[str] = []
    published: list[Publish] = []
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        event, dt = data.draw(_event(node, published))
        if event is None:
            continue
        now += dt
        story.append(f"t={now:.2f} {event!r}")
        try:
            effects = node.handle(event, now)
        except Exception as exc:
            where = "\n  ".join(story[-12:])
            raise AssertionError(f"handle raised {type(exc).__name__}: {exc}\nafter:\n  {where}") from exc
        published = [e for e in effects if isinstance(e, Publish)][-8:] or published
        _check(node, effects, story)


def _elected(node: NodeMachine, now: float) -> float:
    """Tick until the node claims, then echo its claim back, as the broker would."""
    claims: list[Claim] = []
    while not claims:
        now += CFG.tick_interval
        effects = node.handle(Tick(), now)
        claims = [e.body for e in effects if isinstance(e, Publish) and isinstance(e.body, Claim)]
    _deliver(node, "election", SELF, claims[0].epoch, claims[0], now)
    return now


# --- bugs the fuzzer found -------------------------------------------------------------------------


def test_a_lower_attempt_assigned_while_a_cancelled_one_still_runs() -> None:
    # A coordinator assigns attempt 3 and cancels it; before the kill completes, the coordinator of the
    # next epoch (which counts attempts from scratch) assigns attempt 1 of the same task here.
    node, now = _worker()
    for task_id in TASKS[:3]:
        node.handle(TaskFinished(TaskResult(task_id, "j0", 1, "ok")), now)
    for body in (
        Assign((Assignment("t0", "j0", 3, "echo", {}),)),
        CancelAttempt("t0", 3),
        Assign((Assignment("t0", "j0", 1, "echo", {}),)),
    ):
        now += 0.01
        _deliver(node, f"node/{SELF}/in", "b", 1, body, now)
    assert sorted(node.worker.running) == [("t0", 1), ("t0", 3)]  # 3 is being killed
    node.validate()


def test_a_commit_record_of_an_unfinished_state_is_not_adopted() -> None:
    # A commit record says t0 is "queued" (a TaskUpdate may carry any TaskState); the next coordinator
    # adopts it as committed, and the real result of t0 is then a second commit.
    node, now = _fresh()
    tasks = (TaskSpec("t0", "echo", {}), TaskSpec("t1", "echo", {}))
    _deliver(node, "job/j0/spec", "u-1", 0, SubmitJob("j0", tasks, "task", "u-1"), now)
    _deliver(node, "job/j0/commits/1.0", "c", 1, Commit("j0", (TaskUpdate("t0", "queued", 0),)), now)
    now = _elected(node, now) + 0.1
    report = WorkerReport(node.election.epoch, (), (TaskResult("t0", "j0", 0, "ok"),))
    effects = _deliver(node, "coord/in", "c", node.election.epoch, report, now)
    _check(node, effects, ["worker report"])


def test_a_commit_record_of_a_foreign_task_does_not_finish_the_job() -> None:
    # Two commits for a job of two tasks, one of them for a task the job does not have: the adopted job
    # counts as finished (committed == tasks) and is closed at once, though t0 never ran.
    node, now = _fresh()
    tasks = (TaskSpec("t0", "echo", {}), TaskSpec("t1", "echo", {}))
    _deliver(node, "job/j0/spec", "u-1", 0, SubmitJob("j0", tasks, "task", "u-1"), now)
    updates = (TaskUpdate("t1", "done", 1), TaskUpdate("t9", "done", 1))
    _deliver(node, "job/j0/commits/1.0", "c", 1, Commit("j0", updates), now)
    _elected(node, now)
    assert node.scheduler is not None and "j0" in node.scheduler.jobs


# --- bugs the fuzzer found, fixed since ------------------------------------------------------------


def test_a_new_coordinator_checks_a_spec_nobody_checked() -> None:
    # The spec was retained while no coordinator acted (or its coordinator died before rejecting it), so
    # every member's replica holds it. Adopted unchecked, its unknown dependency raised KeyError while
    # the node became coordinator, leaving it acting for the epoch with no scheduler.
    node, now = _fresh()
    spec = SubmitJob("j0", (TaskSpec("t0", "echo", {}, after=("t9",)),), submitted_by="u-1", role="submitter")
    _deliver(node, "job/j0/spec", "u-1", 0, spec, now)
    _elected(node, now)
    _check(node, [], ["claim echoed"])
    assert node.scheduler is not None and "j0" not in node.scheduler.jobs


def test_adopted_jobs_that_share_a_task_id() -> None:
    # Two retained specs that use the same task id. Adopted unchecked, the second overwrote the first's
    # record in the task table: closing j1 took t0 out, and closing j0 then failed on the same key inside
    # `drain`, outside the per-event guard, and again on every later event.
    node, now = _fresh()
    for job_id in ("j0", "j1"):
        spec = SubmitJob(job_id, (TaskSpec("t0", "echo", {}),), submitted_by="u-1", role="submitter")
        _deliver(node, f"job/{job_id}/spec", "u-1", 0, spec, now)
    now = _elected(node, now)
    for target in ("j1", "j0"):
        now += 0.1
        _deliver(node, "coord/in", "u-1", node.election.epoch, Cancel(target, "u-1", "submitter"), now)
    node.handle(Tick(), now + 0.1)
    node.validate()
