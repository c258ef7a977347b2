"""What each principal may do: roles, permissions, and which messages each kind may send.

Users hold one of four roles, each including the one before: a viewer looks, a submitter also submits
work and cancels its own, an operator also runs code (MapReduce apps from files, `command` tasks) and
cancels anyone's work, an admin also issues and revokes tokens, adds and removes devices and sets
quotas. Nodes hold the role "member": they speak the protocol (heartbeats, claims, assignments,
results, commits) and nothing a user may not also do on their own behalf.

The tables are pure data, checked by the shell for every message after its signature (a user can never
send a node's message) and by the coordinator for what depends on state (a cancel of someone else's job).
"""

from __future__ import annotations

from typing import Any, Literal

from swarm.errors import ConfigError
from swarm.messages import SubmitJob

__all__ = [
    "MEMBER",
    "NODE_MESSAGES",
    "ROLES",
    "USER_MESSAGES",
    "Permission",
    "allowed",
    "check_role",
    "may_send",
    "permission_refusal",
    "task_runs_code",
]

ROLES: tuple[str, ...] = ("viewer", "submitter", "operator", "admin")
MEMBER = "member"

Permission = Literal["view", "submit", "run_code", "cancel_any", "admin"]

#: The weakest role that has each permission.
_REQUIRES: dict[str, str] = {
    "view": "viewer",
    "submit": "submitter",
    "run_code": "operator",
    "cancel_any": "operator",
    "admin": "admin",
}

#: Message tags a user (a CLI or an API client) may send; everything else comes only from members.
USER_MESSAGES: frozenset[str] = frozenset(
    {"submit_job", "cancel", "tasks_query", "quota_query", "trust_roster"}
)
#: Message tags members send (they may also do what users do, on behalf of the cluster).
NODE_MESSAGES: frozenset[str] = frozenset(
    {
        "heartbeat",
        "node_gone",
        "claim",
        "coordinator",
        "assign",
        "cancel_attempt",
        "results",
        "worker_report",
        "commit",
        "job_state",
        "job_accepted",
        "job_rejected",
        "tasks_started",
        "amend",
        "tasks_reply",
        "quota_reply",
        "quota_ledger",
        "sync",
        "error",
        "submit_job",
        "cancel",
        "tasks_query",
        "quota_query",
        "dag_defined",
        "standard_defined",
        "artifact_published",
        "run_started",
    }
)
#: What each user message needs.
_MESSAGE_PERMISSION: dict[str, Permission] = {
    "submit_job": "submit",
    "cancel": "submit",
    "tasks_query": "view",
    "quota_query": "view",
    "trust_roster": "admin",
}


def check_role(role: str) -> str:
    """Return `role` if it is a user role; raise ConfigError naming the choices otherwise."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role


def allowed(role: str, permission: Permission) -> bool:
    """Whether a principal with `role` has `permission`. Members have only what the protocol needs."""
    if role == MEMBER:
        return permission in ("view", "submit", "cancel_any")
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(_REQUIRES[permission])


def may_send(kind: str, role: str, tag: str) -> str | None:
    """None if a principal of `kind`/`role` may send a message of type `tag`, else the reason why not."""
    if kind == "node":
        return None if tag in NODE_MESSAGES else f"a node may not send {tag!r}"
    if tag not in USER_MESSAGES:
        return f"a user may not send {tag!r} (only members speak the protocol)"
    needed = _MESSAGE_PERMISSION[tag]
    if not allowed(role, needed):
        return f"role {role!r} lacks the {needed!r} permission that {tag!r} needs"
    return None


def task_runs_code(task_type: str, payload: dict[str, Any]) -> bool:
    """Whether a task runs code its submitter wrote: a command, a workflow step running an artifact
    (PYTHON, SHELL, JVM), or a MapReduce app shipped as source (or, in a MAPREDUCE step, pushed as an
    artifact).

    Built-in and installed MapReduce apps (named by module) are the cluster's own code, and python_eval
    evaluates a restricted expression language, so neither needs the `run_code` permission.
    """
    if task_type in ("command", "step.python", "step.shell", "step.jvm"):
        return True  # a workflow step of these runtimes runs the code of its artifact
    if task_type.startswith("mapreduce."):
        app = payload.get("app")
        return not isinstance(app, dict) or app.get("source") is not None
    if task_type.startswith("step.mapreduce."):
        # A MAPREDUCE step's app comes from an artifact (the user's code) or is a built-in one.
        return payload.get("artifact") is not None
    return False


def permission_refusal(job: SubmitJob) -> str | None:
    """Why the job's submitter may not run it (a task runs its own code without `run_code`), or None."""
    for spec in job.tasks:
        if task_runs_code(spec.type, spec.payload) and not allowed(job.role, "run_code"):
            return (
                f"task {spec.task_id!r} runs code of its own ({spec.type}); role {job.role or 'none'!r} of"
                f" {job.submitted_by or 'the submitter'} lacks the run_code permission (an operator's)"
            )
    return None
