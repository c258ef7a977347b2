"""A node's story: entries that name their cause, in a bounded buffer, logged by the shell once each."""

from __future__ import annotations

import logging
import random

import pytest

from swarm.core.config import CoreConfig
from swarm.core.events import MessageReceived, Publish, TaskFinished, Tick
from swarm.core.node import DeviceStatus, NodeMachine
from swarm.core.story import Story
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Body, Claim, Envelope, NodeGone, SubmitJob, TaskResult, TaskSpec
from swarm.storylog import log_new_story

CFG = CoreConfig()


def _node(story_size: int = 100) -> NodeMachine:
    status = DeviceStatus(simulated_capabilities("a"), 0.1, 2048)
    return NodeMachine("a", "a", CFG, random.Random(0), lambda spec: None, status, 0, 0.0, story_size)


def _deliver(node: NodeMachine, topic: str, sender: str, msg_id: str, body: Body, now: float) -> None:
    node.handle(MessageReceived(topic, Envelope(1, "c", sender, node.election.epoch, msg_id, body)), now)


def _coordinator() -> tuple[NodeMachine, float]:
    node, now = _node(), 0.0
    claims: list[Claim] = []
    while not claims:
        now += CFG.tick_interval
        claims = [
            e.body for e in node.handle(Tick(), now) if isinstance(e, Publish) and isinstance(e.body, Claim)
        ]
    _deliver(node, "election", "a", "claim", claims[0], now)
    assert node.scheduler is not None
    return node, now


def test_entries_name_their_cause() -> None:
    node = _node()
    _deliver(node, "node/b/hb", "rogue", "m1", NodeGone("forged"), 1.0)
    (refused,) = node.story("rogue")
    assert refused.level == "warning" and refused.time == 1.0
    assert refused.message == "refused node_gone from rogue on node/b/hb: not on the sender's heartbeat topic"
    assert node.story("m1") == [refused] and node.story("nobody") == []


def test_the_scheduler_records_into_the_nodes_story() -> None:
    node, now = _coordinator()
    epoch = node.election.epoch
    acting = node.story(epoch)[-1]
    assert acting.level == "info" and acting.message.startswith(f"acting as coordinator of epoch {epoch}")
    job = SubmitJob(
        "j", (TaskSpec("j.a", "echo", {}, after=("j.missing",)),), submitted_by="u", role="submitter"
    )
    _deliver(node, "job/j/spec", "u", "s1", job, now + CFG.takeover_grace)
    (rejected,) = node.story("j")
    assert rejected.level == "warning" and rejected.message.startswith("rejected job j: ")


def test_the_buffer_keeps_only_the_newest_entries() -> None:
    node = _node(story_size=3)
    for n in range(5):
        _deliver(node, "node/b/hb", "rogue", f"m{n}", NodeGone("forged"), float(n))
    assert [e.ids[0] for e in node.story("rogue")] == ["m2", "m3", "m4"]
    entries, lost = node.take_story()
    assert [e.ids[0] for e in entries] == ["m2", "m3", "m4"] and lost == 2


def test_a_failing_handlers_entry_carries_its_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node()
    bug = RuntimeError("a bug in the worker")

    def failing(*args: object) -> None:
        raise bug

    monkeypatch.setattr(node.worker, "on_finished", failing)
    node.handle(TaskFinished(TaskResult("t0", "j0", 1, "ok")), 2.0)
    (entry,) = node.story("t0")
    assert entry.exc is bug and entry.level == "error" and entry.ids == ("t0", "j0")
    assert node.story("j0") == [entry] and node.metrics["handler_errors"] == 1


def test_take_new_returns_each_entry_once() -> None:
    story = Story(size=10)
    story.record(1.0, "info", "first", "x")
    assert [e.message for e in story.take_new()[0]] == ["first"]
    story.record(2.0, "debug", "second", "x", 7)
    assert [e.message for e in story.take_new()[0]] == ["second"]
    assert story.take_new() == ([], 0)
    assert [e.message for e in story.about(7)] == ["second"]
    assert [e.message for e in story.about("x")] == ["first", "second"]


def test_new_entries_are_logged_once_at_their_level(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _node()
    caplog.set_level(logging.DEBUG, logger="swarm.core")
    _deliver(node, "node/b/hb", "rogue", "m1", NodeGone("forged"), 1.0)

    def failing(*args: object) -> None:
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(node.worker, "on_finished", failing)
    node.handle(TaskFinished(TaskResult("t0", "j0", 1, "ok")), 2.0)
    log_new_story(node)
    log_new_story(node)
    records = [r for r in caplog.records if r.name == "swarm.core"]
    assert [(r.levelno, r.getMessage()[:28]) for r in records] == [
        (logging.WARNING, "refused node_gone from rogue"),
        (logging.ERROR, "dropped an event that failed"),
    ]
    assert records[0].exc_info is None
    assert records[1].exc_info is not None and str(records[1].exc_info[1]) == "a bug in the worker"


def test_entries_pushed_out_before_they_were_logged_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    node = _node(story_size=2)
    for n in range(5):
        _deliver(node, "node/b/hb", "rogue", f"m{n}", NodeGone("forged"), float(n))
    with caplog.at_level(logging.DEBUG, logger="swarm.core"):
        log_new_story(node)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "3 story entries were pushed out of the buffer before they were logged"
    assert len(messages) == 3
