"""The broker's topic tree: every topic swarm publishes or follows is built and parsed here.

Topics are relative to the cluster (the transport puts `swarm/<cluster>/` in front), so the same
names serve the real broker, its access rules and the simulator. A member's own topics::

    node/<id>/hb            its heartbeat (retained; its will says it is gone)
    node/<id>/in            its inbox: assignments, cancels, replies
    election                the latest claim (retained)
    coord                   the coordinator's announcement (retained)
    coord/in                requests to the acting coordinator
    quota/ledger            the acting coordinator's count of the day's admissions (retained)
    job/<id>/spec           a job as submitted (retained until the job's records expire)
    job/<id>/state          its final state (retained)
    job/<id>/events         progress for whoever watches it (not retained)
    job/<id>/commits/<ref>  its committed results, one retained batch per ref
    wf/<kind>/<name>/...    workflow records: definitions, standards, artifacts, runs
    trust/roster            the cluster's members and revocations (retained)
"""

from __future__ import annotations

__all__ = [
    "COORD",
    "COORD_INBOX",
    "ELECTION",
    "EVERY_HEARTBEAT",
    "EVERY_INBOX",
    "JOB_LOG",
    "JOB_SPECS",
    "JOB_STATES",
    "QUOTA_LEDGER",
    "ROSTER",
    "WORKFLOW_PREFIX",
    "WORKFLOW_RECORDS",
    "heartbeat",
    "heartbeat_owner",
    "inbox",
    "inbox_owner",
    "job_commits",
    "job_events",
    "job_of",
    "job_spec",
    "job_state",
    "workflow_artifact",
    "workflow_dag",
    "workflow_run",
    "workflow_standard",
]

ELECTION = "election"
COORD = "coord"
COORD_INBOX = "coord/in"
ROSTER = "trust/roster"
QUOTA_LEDGER = "quota/ledger"

EVERY_HEARTBEAT = "node/+/hb"
EVERY_INBOX = "node/+/in"
JOB_SPECS = "job/+/spec"
JOB_STATES = "job/+/state"
JOB_LOG = "job/+/commits/+"
WORKFLOW_RECORDS = ("wf/dag/+/+", "wf/standard/+/+", "wf/artifact/+/+", "wf/run/+")
WORKFLOW_PREFIX = "wf/"


def heartbeat(node_id: str) -> str:
    """Where `node_id` publishes its heartbeats."""
    return f"node/{node_id}/hb"


def inbox(node_id: str) -> str:
    """Where messages for `node_id` alone go."""
    return f"node/{node_id}/in"


def job_spec(job_id: str) -> str:
    """The retained spec of a job."""
    return f"job/{job_id}/spec"


def job_state(job_id: str) -> str:
    """The retained final state of a job."""
    return f"job/{job_id}/state"


def job_events(job_id: str) -> str:
    """A job's progress events."""
    return f"job/{job_id}/events"


def job_commits(job_id: str, ref: str = "+") -> str:
    """One retained batch of a job's commits (`ref` is `<epoch>.<batch>`), or all of them."""
    return f"job/{job_id}/commits/{ref}"


def workflow_dag(dag_id: str, version: str) -> str:
    """The retained definition of one version of a DAG."""
    return f"wf/dag/{dag_id}/{version}"


def workflow_standard(name: str, version: str) -> str:
    """The retained record of one version of a task standard."""
    return f"wf/standard/{name}/{version}"


def workflow_artifact(name: str, version: str) -> str:
    """The retained record of one version of an artifact."""
    return f"wf/artifact/{name}/{version}"


def workflow_run(run_id: str) -> str:
    """The retained record of a workflow run."""
    return f"wf/run/{run_id}"


def inbox_owner(topic: str) -> str | None:
    """The member whose inbox this is, or None."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "node" and parts[2] == "in" and parts[1]:
        return parts[1]
    return None


def job_of(topic: str) -> tuple[str, str] | None:
    """`(job_id, leaf)` of a job topic (`leaf` is spec, state, events or commits), or None."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "job" or not parts[1]:
        return None
    return parts[1], parts[2]


def heartbeat_owner(topic: str) -> str | None:
    """The member whose heartbeat topic this is, or None."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "node" and parts[2] == "hb" and parts[1]:
        return parts[1]
    return None
