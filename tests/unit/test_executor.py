"""The process-pool executor: outcomes by kind, crashes, timeouts, cancellation, limits, slots, shutdown.

Test-only handlers (in `executor_handlers`) reach the worker processes through `registry_factory`, an
import string the workers resolve themselves: the same path production uses for the installed plugins,
with no monkeypatching across process boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from executor_handlers import FACTORY

from swarm.errors import ConfigError
from swarm.runtime.executor import Executor
from swarm.runtime.executor_outcome import Outcome
from swarm.taskapi import TaskPolicy


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[Executor]:
    async with Executor(slots=2, node_id="n1", work_dir=tmp_path, registry_factory=FACTORY) as executor:
        yield executor


async def worker_of(ex: Executor) -> str:
    """Which worker ran a task (a token: a sandboxed worker's pid is the same in every sandbox)."""
    outcome = await ex.run("pid", 1, "test_env", {}, 5)
    return str(outcome.result["worker"])


async def test_echo_and_environment(ex: Executor, tmp_path: Path) -> None:
    outcome = await ex.run("t1", 1, "echo", {"message": "hi"}, 5)
    assert outcome.ok and outcome.kind == "ok" and outcome.result == {"message": "hi"}
    assert 0 < outcome.started_at <= outcome.finished_at <= time.time()
    env = (await ex.run("t2", 7, "test_env", {}, None)).result
    assert env["SWARM_NODE_ID"] == "n1" and env["SWARM_TASK_ID"] == "t2" and env["SWARM_ATTEMPT"] == "7"
    assert env["ctx"] == ["n1", "t2", 7] and env["SWARM_WORK_DIR"] == env["cwd"] == env["work_dir"]
    assert Path(env["work_dir"]).parent.parent == tmp_path  # <work dir>/<worker's dir>/<attempt's dir>
    assert env["pid"] != os.getpid()


def test_requests_and_replies_larger_than_the_pipe_buffer_pass_on_uvloop(tmp_path: Path) -> None:
    # uvloop makes the descriptors it watches non-blocking; a 2 MB message must still go through whole,
    # both ways, as it does on the default loop (this failed as "worker process died").
    uvloop = pytest.importorskip("uvloop")
    message = "x" * 2_000_000

    async def echo() -> Outcome:
        async with Executor(slots=1, work_dir=tmp_path, registry_factory=FACTORY) as executor:
            return await executor.run("big", 1, "echo", {"message": message}, 30)

    outcome = uvloop.run(echo())
    assert outcome.ok, outcome.error
    assert outcome.result == {"message": message}


@pytest.mark.parametrize(
    ("task_type", "payload", "kind", "error"),
    [
        ("test_raise", {"what": "retry"}, "retry", "Retry: disk busy"),
        ("test_raise", {"what": "fatal"}, "fatal", "Fatal: never works"),
        ("test_raise", {"what": "divide"}, "error", "ZeroDivisionError"),
        ("test_raise", {"what": "exit"}, "error", "SystemExit"),
        ("test_raise", {"what": "unserialisable"}, "error", "not JSON-serialisable"),
        ("command", {"argv": ["true"]}, "refused", "allow_command"),
        ("sleep", {"seconds": -1}, "invalid", "seconds"),
        ("no_such_type", {}, "unknown_type", "known types: command, echo"),
    ],
)
async def test_outcomes_are_classified(
    ex: Executor, task_type: str, payload: dict[str, Any], kind: str, error: str
) -> None:
    outcome = await ex.run("t", 1, task_type, payload, 5)
    assert not outcome.ok and outcome.kind == kind
    assert outcome.error is not None and error in outcome.error
    assert outcome.retry_after == (2.5 if kind == "retry" else None)


async def test_error_carries_the_traceback(ex: Executor) -> None:
    outcome = await ex.run("t", 1, "test_raise", {"what": "divide"}, 5)
    assert outcome.error is not None and "Traceback" in outcome.error and "in run" in outcome.error


async def test_payload_that_is_not_json_is_invalid(ex: Executor) -> None:
    outcome = await ex.run("t", 1, "echo", {"x": object()}, 5)
    assert outcome.kind == "invalid"


@pytest.mark.parametrize(("payload", "error"), [({}, "exited with code 3"), ({"signal": 1}, "SIGSEGV")])
async def test_a_crash_fails_one_attempt_and_the_worker_is_replaced(
    ex: Executor, payload: dict[str, Any], error: str
) -> None:
    before = {await worker_of(ex) for _ in range(4)}
    outcome = await ex.run("boom", 1, "test_exit", payload, 5)
    assert outcome.kind == "crash" and outcome.error is not None and error in outcome.error
    results = await asyncio.gather(*(ex.run(f"after{i}", 1, "echo", {"i": i}, 5) for i in range(6)))
    assert all(r.ok for r in results)
    after = {await worker_of(ex) for _ in range(4)}
    assert len(before - after) == 1  # exactly one worker was replaced


async def test_timeout_kills_and_replaces_the_worker(ex: Executor) -> None:
    started = time.monotonic()
    outcome = await ex.run("slow", 1, "sleep", {"seconds": 30}, 0.3)
    assert outcome.kind == "timeout" and "timed out after 0.3" in (outcome.error or "")
    assert time.monotonic() - started < 2
    assert (await ex.run("next", 1, "echo", {}, 5)).ok


async def test_cancel_a_running_task(ex: Executor) -> None:
    assert not ex.cancel("nothing-here")
    running = asyncio.create_task(ex.run("long", 1, "sleep", {"seconds": 30}, None))
    await asyncio.sleep(0.2)
    assert ex.running == ["long"]
    assert ex.cancel("long")
    outcome = await asyncio.wait_for(running, 2)
    assert outcome.kind == "error" and outcome.error == "cancelled"
    assert (await ex.run("next", 1, "echo", {}, 5)).ok


async def test_cancel_names_the_attempt_and_spares_a_newer_one(tmp_path: Path) -> None:
    """A coordinator that reassigns a task cancels the old attempt as the new one starts on the same node."""
    async with Executor(slots=2, work_dir=tmp_path) as ex:
        old = asyncio.create_task(ex.run("t", 1, "sleep", {"seconds": 30}, None))
        new = asyncio.create_task(ex.run("t", 2, "sleep", {"seconds": 0.3}, None))
        await asyncio.sleep(0.2)
        assert not ex.cancel("t", 3)
        assert ex.cancel("t", 1)
        outcome = await asyncio.wait_for(old, 2)
        assert outcome.error == "cancelled"
        assert (await asyncio.wait_for(new, 5)).ok


async def test_cancel_a_queued_task_returns_at_once(tmp_path: Path) -> None:
    async with Executor(slots=1, work_dir=tmp_path) as ex:
        first = asyncio.create_task(ex.run("first", 1, "sleep", {"seconds": 0.5}, None))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(ex.run("queued", 1, "echo", {}, None))
        await asyncio.sleep(0.05)
        assert ex.cancel("queued")
        outcome = await asyncio.wait_for(queued, 0.2)
        assert outcome.error == "cancelled" and not first.done()
        assert (await first).ok


async def test_cancelling_the_caller_kills_the_task_and_keeps_the_slot(tmp_path: Path) -> None:
    async with Executor(slots=1, work_dir=tmp_path) as ex:
        caller = asyncio.create_task(ex.run("t", 1, "sleep", {"seconds": 30}, None))
        await asyncio.sleep(0.2)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert (await asyncio.wait_for(ex.run("next", 1, "echo", {}, 5), 5)).ok


async def test_memory_limit_fails_the_task_not_the_node(tmp_path: Path) -> None:
    async with Executor(slots=1, memory_limit_mb=200, work_dir=tmp_path, registry_factory=FACTORY) as ex:
        outcome = await ex.run("hog", 1, "test_alloc", {"mb": 4000}, 10)
        assert outcome.kind in ("error", "crash")
        if outcome.kind == "error":
            error = outcome.error or ""
            assert "MemoryError" in error and "200 MiB of address space" in error
            assert "memory_limit_mb" in error
        assert (await ex.run("small", 1, "test_alloc", {"mb": 20}, 10)).result == 20 * 1024 * 1024
        assert (await ex.run("next", 1, "echo", {}, 5)).ok


async def test_concurrency_is_limited_to_slots(ex: Executor) -> None:
    started = time.monotonic()
    outcomes = await asyncio.gather(*(ex.run(f"s{i}", 1, "sleep", {"seconds": 0.3}, 5) for i in range(5)))
    elapsed = time.monotonic() - started
    assert all(o.ok for o in outcomes)
    assert 0.85 <= elapsed < 2.5  # three waves of at most two
    assert _max_overlap(outcomes) == 2


def _max_overlap(outcomes: list[Outcome]) -> int:
    events = sorted([(o.started_at, 1) for o in outcomes] + [(o.finished_at, -1) for o in outcomes])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


async def test_close_stops_running_tasks_and_reaps_every_worker(tmp_path: Path) -> None:
    ex = Executor(slots=2, work_dir=tmp_path, registry_factory=FACTORY)
    await ex.__aenter__()
    pids = set(ex.worker_pids)
    assert len(pids) == 2
    running = asyncio.create_task(ex.run("long", 1, "sleep", {"seconds": 30}, None))
    await asyncio.sleep(0.2)
    await asyncio.wait_for(ex.__aexit__(None, None, None), 5)
    outcome = await asyncio.wait_for(running, 1)
    assert outcome.kind == "error" and outcome.error == "executor shut down"
    assert (await ex.run("late", 1, "echo", {}, 5)).error == "executor is not running"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("swarm[")]


async def test_default_work_dir_is_temporary(tmp_path: Path) -> None:
    async with Executor(slots=1, registry_factory=FACTORY) as ex:
        work_dir = Path((await ex.run("t", 1, "test_env", {}, 5)).result["cwd"]).parent.parent
        assert work_dir.is_dir()
    assert not work_dir.exists()


async def test_a_broken_registry_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"could not start.*no_such_module"):
        async with Executor(slots=1, work_dir=tmp_path, registry_factory="no_such_module:make"):
            pass


async def test_policy_reaches_the_workers(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # task code may run as another user (nobody) when the tests run as root
    policy = TaskPolicy(allow_file_operations=True, allowed_paths=(str(shared),))
    async with Executor(slots=1, policy=policy, work_dir=tmp_path / "work") as ex:
        target = str(shared / "out.txt")
        assert (await ex.run("w", 1, "file_operation", {"op": "write", "path": target, "data": "x"}, 5)).ok
        read = await ex.run("r", 1, "file_operation", {"op": "read", "path": target}, 5)
        assert read.result["data"] == "x"


async def test_trivial_task_overhead_is_well_under_a_millisecond(ex: Executor) -> None:
    for i in range(50):  # warm up
        await ex.run(f"w{i}", 1, "echo", {}, 5)
    n = 500
    started = time.perf_counter()
    for i in range(n):
        await ex.run(f"e{i}", 1, "echo", {"i": i}, 5)
    per_task = (time.perf_counter() - started) / n
    assert per_task < 0.002, f"{per_task * 1e6:.0f} us per trivial task"


async def test_a_worker_that_dies_while_idle_is_replaced_before_the_next_task(ex: Executor) -> None:
    before = {await worker_of(ex) for _ in range(6)}
    assert len(before) == 2
    victim = ex.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(0.2)  # the event loop sees the pipe close
    outcomes = await asyncio.gather(*(ex.run(f"t{i}", 1, "test_env", {}, 5) for i in range(4)))
    assert all(o.ok for o in outcomes)
    assert victim not in ex.worker_pids
    assert len(before - {o.result["worker"] for o in outcomes} - {await worker_of(ex) for _ in range(6)}) == 1


async def test_a_worker_serves_one_owner(ex: Executor) -> None:
    """Task code one principal ran never shares an interpreter with another's: it could have left a
    thread or a patched module there."""

    async def worker_for(owner: str) -> str:
        outcome = await ex.run("who", 1, "test_env", {}, 5, owner=owner)
        return str(outcome.result["worker"])

    alice, bob = await worker_for("alice"), await worker_for("bob")  # two slots: a fresh worker each
    assert alice != bob
    assert {await worker_for("alice") for _ in range(4)} == {alice}
    assert await worker_for("bob") == bob
    carol = await worker_for("carol")  # no worker is fresh or hers: the one idle longest is replaced
    assert carol not in (alice, bob)
    assert await worker_for("alice") not in (alice, bob, carol)  # alice's went to carol


async def test_a_worker_that_served_its_attempts_is_succeeded(tmp_path: Path) -> None:
    """After `attempts_per_worker` attempts a successor starts beside the worker and takes its place
    between two attempts: every attempt succeeds, the old worker stops, and one worker serves the slot."""
    async with Executor(
        slots=1, work_dir=tmp_path, registry_factory=FACTORY, attempts_per_worker=3
    ) as executor:
        first = executor.worker_pids
        outcomes = [await executor.run(f"t{i}", 1, "test_env", {}, 5) for i in range(3)]
        await asyncio.sleep(1.0)  # the successor starts meanwhile
        later = [await executor.run(f"u{i}", 1, "test_env", {}, 5) for i in range(4)]
        assert all(o.ok for o in outcomes + later)
        assert len({o.result["worker"] for o in outcomes}) == 1
        assert {o.result["worker"] for o in later[:3]} != {o.result["worker"] for o in outcomes}
        assert len(executor.worker_pids) == 1 and executor.worker_pids != first
        for pid in first:
            deadline = time.monotonic() + 5
            while _alive(pid):
                assert time.monotonic() < deadline, f"worker {pid} still runs"
                await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True
