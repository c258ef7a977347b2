"""Every message swarm nodes and clients exchange: frozen, slotted dataclasses in one versioned envelope.

The bodies form a tagged union: each class has a `TAG`, which the envelope carries as its type. `codec.py`
turns bytes into these classes and back, validating every field, so nothing past the codec sees a raw dict.
Payloads and results are JSON values (`Any`); everything else is typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from swarm.devices.capabilities import (
    ISOLATION_LEVELS,
    Capabilities,
    FieldSpec,
    Toleration,
    check_labels,
    isolation_rank,
    meets_isolation,
)
from swarm.ids import Id

__all__ = [
    "BODY_TYPES",
    "PRIORITIES",
    "RESERVATION_KIND",
    "TERMINAL_STATES",
    "Admission",
    "Amend",
    "ArtifactPublished",
    "Assign",
    "Assignment",
    "AttemptsSpent",
    "Body",
    "Cancel",
    "CancelAttempt",
    "Capabilities",
    "Claim",
    "Commit",
    "CoordinatorAnnounce",
    "DagDefined",
    "Envelope",
    "ErrorReply",
    "Heartbeat",
    "Hold",
    "Inflow",
    "JobAccepted",
    "JobRejected",
    "JobState",
    "NodeGone",
    "QuotaLedger",
    "QuotaLine",
    "QuotaQuery",
    "QuotaReply",
    "Requirements",
    "Results",
    "RetryPolicy",
    "RunStarted",
    "StandardDefined",
    "Started",
    "SubmitJob",
    "Sync",
    "TaskRef",
    "TaskResult",
    "TaskSpec",
    "TaskSummary",
    "TaskUpdate",
    "TasksQuery",
    "TasksReply",
    "TasksStarted",
    "Toleration",
    "TrustRoster",
    "WorkerReport",
]

#: Priority names, most urgent first; a task's `priority` is an index into this tuple.
PRIORITIES: tuple[str, ...] = ("urgent", "high", "normal", "low", "background")

OutcomeKind = Literal[
    "ok",
    "error",
    "retry",
    "fatal",
    "timeout",
    "crash",
    "refused",
    "invalid",
    "unknown_type",
    "lost",
    "cancelled",
]
TaskState = Literal["waiting", "queued", "running", "done", "failed", "cancelled", "skipped"]
#: A skipped task is a workflow step whose incoming conditions did not hold (see `Inflow`).
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled", "skipped"})
#: `SubmitJob.kind` of a reservation: slots held for a run that has not started yet.
RESERVATION_KIND = "reservation"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What travels on the wire: protocol version, cluster, sender, the sender's epoch, an id and a body."""

    v: int
    cluster: str
    sender: str
    epoch: int
    msg_id: str
    body: Body


# --- membership and election -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Retained on `node/<id>/hb`: who the node is, what it can do and how busy it is."""

    TAG: ClassVar[str] = "heartbeat"
    name: str
    caps: Capabilities
    slots: int
    running: int
    load: float
    free_memory_mb: int
    seq: int
    broker: str = ""
    counters: dict[str, Any] = field(default_factory=dict)
    #: The URL of the node's HTTP API, when it serves one.
    api: str = ""
    #: The sender's own patience (`Membership.patience`): a member that is itself late is allowed that
    #: many times the usual silence by everyone who follows it.
    patience: float = 1.0
    #: The sender's heartbeat interval in seconds, paced by the cluster's size (0: not said, the
    #: configured one); it is judged by that (`Membership.tick`).
    interval: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeGone:
    """Retained on `node/<id>/hb` by the MQTT last will, or by a node that leaves cleanly."""

    TAG: ClassVar[str] = "node_gone"
    reason: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A candidate's bid to coordinate `epoch`; the first claim for an epoch in broker order wins."""

    TAG: ClassVar[str] = "claim"
    epoch: int


@dataclass(frozen=True, slots=True)
class CoordinatorAnnounce:
    """Retained on `coord`: the winner of `epoch` is acting.

    `standbys` are the members it asks to follow every heartbeat and the whole job log, so that one of them
    can take over at once; they claim first, in this order, when it dies.
    """

    TAG: ClassVar[str] = "coordinator"
    epoch: int
    coordinator: Id
    standbys: tuple[Id, ...] = ()


# --- tasks and jobs ----------------------------------------------------------------------------------


def _at_least(have: float, wanted: float) -> bool:
    return have >= wanted


def _holds_gib(have_mib: int, wanted_gib: float) -> bool:
    return have_mib >= wanted_gib * 1024


def _equals(have: object, wanted: object) -> bool:
    return have == wanted


def _offers(have: tuple[str, ...], wanted: str) -> bool:
    return wanted in have


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a device must have to be given a task: a table whose rows (`FieldSpec`, see
    `swarm.devices.capabilities`) say each requirement's unit and range, whether a job may ask for it,
    and which capability meets it; every field has one, so adding a requirement is adding its field.

    `isolation` is the weakest isolation level the task accepts (see `swarm.devices.capabilities`);
    `network` asks for network access where the node sandboxes tasks, which otherwise have none.

    Constraints (see `swarm.core.placement`): `labels` the member must carry, all of them; `tolerations`
    of its taints; `avoid` task ids of the same job whose current or last member this task must not
    share (anti-affinity); `pin` the members an allocation chose (used while one of them is alive and
    qualifies); `preempt` lets the task, when nothing has room, take the place of one running attempt
    of strictly lower priority whose task is `preemptible`.
    """

    min_cores: int = field(
        default=0,
        metadata=FieldSpec(unit="cores", low=0, capability="cores", meets=_at_least, settable=True).meta,
    )
    min_memory_gb: float = field(
        default=0.0,
        metadata=FieldSpec(unit="GiB", low=0, capability="memory_mb", meets=_holds_gib, settable=True).meta,
    )
    min_storage_gb: float = field(
        default=0.0,
        metadata=FieldSpec(unit="GiB", low=0, capability="disk_free_gb", meets=_at_least, settable=True).meta,
    )
    platform: str | None = field(
        default=None, metadata=FieldSpec(capability="platform", meets=_equals, settable=True).meta
    )
    arch: str | None = field(
        default=None, metadata=FieldSpec(capability="arch", meets=_equals, settable=True).meta
    )
    role: str | None = field(
        default=None, metadata=FieldSpec(capability="role", meets=_equals, settable=True).meta
    )
    gpu: bool | None = field(
        default=None, metadata=FieldSpec(capability="gpu", meets=_equals, settable=True).meta
    )
    #: Met by the scheduler: the task runs alone on its member.
    exclusive: bool = field(default=False, metadata=FieldSpec(settable=True).meta)
    #: Met by placement, by member id or name.
    exclude: tuple[str, ...] = field(default=(), metadata=FieldSpec(settable=True).meta)
    isolation: str | None = field(
        default=None,
        metadata=FieldSpec(
            levels=ISOLATION_LEVELS, capability="isolation", meets=meets_isolation, settable=True
        ).meta,
    )
    #: Met by the executor, which opens the sandbox's network.
    network: bool = field(default=False, metadata=FieldSpec(settable=True).meta)
    #: A workflow runtime family the device must offer (`Capabilities.runtimes`).
    runtime: str | None = field(default=None, metadata=FieldSpec(capability="runtimes", meets=_offers).meta)
    labels: tuple[tuple[str, str], ...] = field(default=(), metadata=FieldSpec().meta)
    tolerations: tuple[Toleration, ...] = field(default=(), metadata=FieldSpec().meta)
    avoid: tuple[Id, ...] = field(default=(), metadata=FieldSpec().meta)
    pin: tuple[Id, ...] = field(default=(), metadata=FieldSpec().meta)
    preempt: bool = field(default=False, metadata=FieldSpec().meta)
    preemptible: bool = field(default=True, metadata=FieldSpec().meta)

    def __post_init__(self) -> None:
        """Reject what no node could interpret, an unknown isolation level or malformed labels, whichever
        way the requirements were built. Ranges are a job's to check (`swarm.core.jobs.check_job`), so
        that a coordinator rejects a job out of range with its reason instead of dropping it at decoding."""
        check_labels(self.labels, "required label")
        if self.isolation is not None:
            isolation_rank(self.isolation)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed task is tried again."""

    max_retries: int = 3
    backoff: Literal["fixed", "linear", "exponential"] = "exponential"
    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.1
    #: The factor of exponential backoff: delay = base * multiplier ** (attempt - 1).
    multiplier: float = 2.0


@dataclass(frozen=True, slots=True)
class Inflow:
    """One incoming edge of a workflow step: the tasks of the upstream step, the edge's condition, and
    which of its outputs feed which of this step's inputs (input name -> output name).

    A step fanned out over several tasks (`parallelism`) is one upstream of several `sources`: the edge
    sees their combined state, and each mapped input receives the list of the shards' values.
    """

    sources: tuple[Id, ...]
    condition: str = "SUCCESS"
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task as submitted: handler type, JSON payload, and how, where and when it may run.

    `after` names tasks of the same job that must be done first; with `pipe`, the payload gains a
    `previous` key holding their results (the result itself for one predecessor, a list for several).
    A workflow step has `inflows` instead: it waits for its predecessors to be final in any state, and
    then runs, is skipped or fails by its edges' conditions (`swarm.workflow.gate`), its payload gaining
    an `inputs` key from their outputs.
    """

    task_id: Id
    type: str
    payload: dict[str, Any]
    priority: int = 2
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    requirements: Requirements = field(default_factory=Requirements)
    after: tuple[Id, ...] = ()
    pipe: bool = False
    pending_timeout: float | None = None
    inflows: tuple[Inflow, ...] = ()


@dataclass(frozen=True, slots=True)
class Hold:
    """Execution slots a reservation keeps on one member."""

    node: Id
    slots: int


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Retained on `job/<id>/spec`: the durable record of a submission, kept until the job finishes.

    `submitted_by`, `role` and `team` are the submitter's principal id, role and team; every receiver
    checks them against the certificate the spec was signed with, so the coordinator (and any successor
    reading the retained spec) can trust them for permissions and quotas.

    A job of kind `reservation` (`RESERVATION_KIND`) has no tasks: it holds the `holds` slots until
    `expires` (wall-clock seconds) or until the run that names it (`meta["allocation"]`) has started
    the tasks it holds them for (`swarm.core.reservations`).
    """

    TAG: ClassVar[str] = "submit_job"
    job_id: Id
    tasks: tuple[TaskSpec, ...]
    kind: str = "task"
    submitted_by: str = ""
    role: str = ""
    team: str = ""
    #: What the job is beyond its tasks, e.g. a workflow run's {"dag", "version", "trigger"}.
    meta: dict[str, str] = field(default_factory=dict)
    #: A reservation's slots per member, and when it ends (see above).
    holds: tuple[Hold, ...] = ()
    expires: float | None = None


@dataclass(frozen=True, slots=True)
class JobAccepted:
    """On `job/<id>/events`: a coordinator owns the job."""

    TAG: ClassVar[str] = "job_accepted"
    job_id: Id
    tasks: int


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt the coordinator placed: which, and on which node."""

    task_id: Id
    attempt: int
    node: Id


@dataclass(frozen=True, slots=True)
class TasksStarted:
    """On `job/<id>/events`, for a workflow run only: attempts the coordinator just placed, so that
    whoever shows the run sees its steps running, not only their ends."""

    TAG: ClassVar[str] = "tasks_started"
    job_id: Id
    started: tuple[Started, ...]


@dataclass(frozen=True, slots=True)
class JobRejected:
    """On `job/<id>/events`: the job can never run, and why."""

    TAG: ClassVar[str] = "job_rejected"
    job_id: Id
    reason: str


@dataclass(frozen=True, slots=True)
class Assignment:
    """One attempt of one task, handed to a worker; `network` as the task's requirements asked.

    `owner` is the principal who submitted the job (`SubmitJob.submitted_by`): a worker process serves
    one owner's attempts, so task code one user ran never shares an interpreter with another user's
    (`runtime/executor.py`)."""

    task_id: Id
    job_id: Id
    attempt: int
    type: str
    payload: dict[str, Any]
    timeout: float | None = None
    network: bool = False
    owner: str = ""


@dataclass(frozen=True, slots=True)
class Assign:
    """Coordinator -> `node/<id>/in`: attempts to run, batched, and the worker's results it has taken in.

    `acked` lets the worker forget those results; it rides along with assignments (an Assign with no tasks
    carries acknowledgements alone).
    """

    TAG: ClassVar[str] = "assign"
    tasks: tuple[Assignment, ...]
    acked: tuple[TaskRef, ...] = ()
    #: This coordinator's count of the Assigns it sent this worker (1, 2, ...): a report names the last
    #: one the worker saw, so an attempt sent after it is not taken for lost.
    seq: int = 0


@dataclass(frozen=True, slots=True)
class CancelAttempt:
    """Coordinator -> `node/<id>/in`: stop running this attempt."""

    TAG: ClassVar[str] = "cancel_attempt"
    task_id: Id
    attempt: int


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The outcome of one attempt, as the worker saw it."""

    task_id: Id
    job_id: Id
    attempt: int
    kind: OutcomeKind
    result: Any = None
    error: str | None = None
    retry_after: float | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Results:
    """Worker -> `coord/in`: finished attempts, batched."""

    TAG: ClassVar[str] = "results"
    results: tuple[TaskResult, ...]


@dataclass(frozen=True, slots=True)
class TaskRef:
    """An attempt a worker holds (queued or running)."""

    task_id: Id
    job_id: Id
    attempt: int


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """Worker -> `coord/in` when a new epoch starts: what it holds and what it finished unacknowledged."""

    TAG: ClassVar[str] = "worker_report"
    epoch: int
    held: tuple[TaskRef, ...]
    results: tuple[TaskResult, ...]
    #: The highest `Assign.seq` of this epoch's coordinator the worker had received.
    assigns_seen: int = 0


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A task's committed final state; committed exactly once per task."""

    task_id: Id
    state: TaskState
    attempt: int
    node: Id | None = None
    result: Any = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptsSpent:
    """Attempts a task that is not final yet has used, `preempted` of them spending none of its retries
    (preempted, or lost with a member that turned out alive): carried in the job log so that a successor
    coordinator goes on counting."""

    task_id: Id
    attempt: int
    preempted: int = 0


@dataclass(frozen=True, slots=True)
class Commit:
    """Final states the coordinator of `Envelope.epoch` committed, retained on `job/<id>/commits/<e>.<n>`
    (epoch e, n-th batch): each batch of commits is durable on the broker the moment it is published.
    `spent` records the attempts of tasks that failed or were preempted and will be tried again."""

    TAG: ClassVar[str] = "commit"
    job_id: Id
    updates: tuple[TaskUpdate, ...]
    spent: tuple[AttemptsSpent, ...] = ()


@dataclass(frozen=True, slots=True)
class JobState:
    """Retained on `job/<id>/state` when a job is over; its commits stay retained on `job/<id>/commits/+`."""

    TAG: ClassVar[str] = "job_state"
    job_id: Id
    total: int
    finished: bool = True


@dataclass(frozen=True, slots=True)
class Cancel:
    """Client -> `coord/in`: cancel a task or a whole job by id; `by`/`role` as checked against the
    sender's certificate (only the submitter, an operator or an admin may cancel a job)."""

    TAG: ClassVar[str] = "cancel"
    target: Id
    by: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class Amend:
    """To the coordinator, from the node whose API took the request: change a running job (a workflow
    run) by skipping tasks not started yet and adding tasks, on behalf of `by` with `role`."""

    TAG: ClassVar[str] = "amend"
    job_id: Id
    skip: tuple[Id, ...] = ()
    add: tuple[TaskSpec, ...] = ()
    by: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class TasksQuery:
    """Client -> `coord/in`: list tasks; the answer goes to the sender's inbox."""

    TAG: ClassVar[str] = "tasks_query"
    limit: int = 1000
    job_id: Id | None = None


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One line of `swarm tasks`."""

    task_id: Id
    job_id: Id
    type: str
    state: TaskState
    attempt: int
    priority: int
    node: Id | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TasksReply:
    """Coordinator -> `node/<client>/in`: the task list."""

    TAG: ClassVar[str] = "tasks_reply"
    tasks: tuple[TaskSummary, ...]
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Sync:
    """A node -> its own inbox: when it comes back, every retained record of the node's subscriptions
    made before it was sent has arrived (the broker sends those first)."""

    TAG: ClassVar[str] = "sync"
    ref: Id


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """To the sender's inbox: a message of theirs was refused, and why."""

    TAG: ClassVar[str] = "error"
    ref: str
    reason: str


@dataclass(frozen=True, slots=True)
class QuotaQuery:
    """Client -> `coord/in`: the quotas of a user or team and what it uses now."""

    TAG: ClassVar[str] = "quota_query"
    scope_kind: Literal["user", "team"]
    scope: Id


@dataclass(frozen=True, slots=True)
class QuotaLine:
    """One resource of `swarm quota`: its limit (None: unlimited), what is used, until when it holds."""

    resource: str
    limit: float | None
    used: float | None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """`tasks` tasks admitted for `principal` (of `team`; "" for an unnamed submitter or no team) at time
    `at`: what the daily task quota counts (`swarm.core.quota`)."""

    principal: str
    team: str
    at: float
    tasks: int


@dataclass(frozen=True, slots=True)
class QuotaLedger:
    """Retained on `quota/ledger` by the acting coordinator: the admissions of the last day, merged by
    minute, so that a successor's daily quotas go on from where its predecessor's were."""

    TAG: ClassVar[str] = "quota_ledger"
    admitted: tuple[Admission, ...]


@dataclass(frozen=True, slots=True)
class QuotaReply:
    """Coordinator -> `node/<client>/in`: the answer to a `QuotaQuery`."""

    TAG: ClassVar[str] = "quota_reply"
    lines: tuple[QuotaLine, ...]
    ref: str = ""


@dataclass(frozen=True, slots=True)
class TrustRoster:
    """Retained on `trust/roster` by an admin: the authority's signed roster (`trust/roster.py`) as JSON."""

    TAG: ClassVar[str] = "trust_roster"
    roster: str


# --- workflows -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DagDefined:
    """Retained on `wf/dag/<dag id>/<version>` by the node whose API took the definition: versions are
    immutable, so every node keeps the same catalogue (in its history database)."""

    TAG: ClassVar[str] = "dag_defined"
    dag_id: Id
    version: str
    definition: dict[str, Any]
    created_at: float
    created_by: str
    valid: bool
    #: The definer's role: a scheduled run starts on the definer's behalf, with the definer's rights.
    role: str = ""


@dataclass(frozen=True, slots=True)
class StandardDefined:
    """Retained on `wf/standard/<name>/<version>`: a task standard (a named, versioned node template)."""

    TAG: ClassVar[str] = "standard_defined"
    name: Id
    version: str
    standard: dict[str, Any]
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class ArtifactPublished:
    """Retained on `wf/artifact/<name>/<version>`: an artifact's metadata and the data servers (with
    their capability tokens) that serve its bytes, which peers fetch and check by its SHA-256."""

    TAG: ClassVar[str] = "artifact_published"
    meta: dict[str, Any]
    sources: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """Retained on `wf/run/<run id>`: a workflow run (the job of the same id) and why it started. Every
    node with an API follows the run's job log from here into its history database."""

    TAG: ClassVar[str] = "run_started"
    run_id: Id
    dag_id: Id
    version: str
    params: dict[str, Any]
    trigger: str
    submitted_by: str
    at: float
    #: The schedule slot a scheduled run is for (its run id is fixed by it).
    slot: float | None = None


Body = (
    Heartbeat
    | NodeGone
    | Claim
    | CoordinatorAnnounce
    | SubmitJob
    | JobAccepted
    | TasksStarted
    | JobRejected
    | Assign
    | CancelAttempt
    | Results
    | WorkerReport
    | Commit
    | JobState
    | Cancel
    | Amend
    | TasksQuery
    | TasksReply
    | Sync
    | ErrorReply
    | QuotaQuery
    | QuotaReply
    | QuotaLedger
    | TrustRoster
    | DagDefined
    | StandardDefined
    | ArtifactPublished
    | RunStarted
)

BODY_TYPES: dict[str, type[Any]] = {
    cls.TAG: cls
    for cls in (
        Heartbeat,
        NodeGone,
        Claim,
        CoordinatorAnnounce,
        SubmitJob,
        JobAccepted,
        TasksStarted,
        JobRejected,
        Assign,
        CancelAttempt,
        Results,
        WorkerReport,
        Commit,
        JobState,
        Cancel,
        Amend,
        TasksQuery,
        TasksReply,
        Sync,
        ErrorReply,
        QuotaQuery,
        QuotaReply,
        QuotaLedger,
        TrustRoster,
        DagDefined,
        StandardDefined,
        ArtifactPublished,
        RunStarted,
    )
}
