"""The topic tree: what is built parses back, and the patterns match what they are meant to."""

from __future__ import annotations

import pytest

from swarm import topics
from swarm.sim.broker import topic_matches


def test_job_topics_parse_back_to_their_job_and_leaf() -> None:
    assert topics.job_of(topics.job_spec("j1")) == ("j1", "spec")
    assert topics.job_of(topics.job_state("j1")) == ("j1", "state")
    assert topics.job_of(topics.job_events("j1")) == ("j1", "events")
    assert topics.job_of(topics.job_commits("j1", "3.7")) == ("j1", "commits")


@pytest.mark.parametrize("topic", ["job", "job/", "job//spec", "node/a/hb", "wf/run/r1", "election"])
def test_what_is_not_a_job_topic_has_no_job(topic: str) -> None:
    assert topics.job_of(topic) is None


def test_only_a_heartbeat_topic_names_its_owner() -> None:
    assert topics.heartbeat_owner(topics.heartbeat("n1")) == "n1"
    for other in (topics.inbox("n1"), "node//hb", "node/n1/hb/x", topics.COORD):
        assert topics.heartbeat_owner(other) is None


def test_the_patterns_cover_the_topics_they_follow() -> None:
    assert topic_matches(topics.EVERY_HEARTBEAT, topics.heartbeat("n1"))
    assert topic_matches(topics.EVERY_INBOX, topics.inbox("n1"))
    assert topic_matches(topics.JOB_SPECS, topics.job_spec("j"))
    assert topic_matches(topics.JOB_STATES, topics.job_state("j"))
    assert topic_matches(topics.JOB_LOG, topics.job_commits("j", "1.0"))
    assert topic_matches(topics.job_commits("j"), topics.job_commits("j", "2.5"))
    assert not topic_matches(topics.JOB_LOG, topics.job_state("j"))
    records = (
        topics.workflow_dag("d", "1.0.0"),
        topics.workflow_standard("s", "1"),
        topics.workflow_artifact("a", "2.1.0"),
        topics.workflow_run("r"),
    )
    for record in records:
        assert record.startswith(topics.WORKFLOW_PREFIX)
        assert sum(topic_matches(p, record) for p in topics.WORKFLOW_RECORDS) == 1, record
