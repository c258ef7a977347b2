"""How task code is walled off: levels, private work directories, default limits, the task user, the sandbox.

Real worker processes throughout. Tests that need bubblewrap skip with the reason when it cannot start
here; tests of the task user run only as root (only root can change users); the rest run everywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from executor_handlers import FACTORY

from swarm.devices.capabilities import ISOLATION_LEVELS
from swarm.devices.probe import probe_capabilities
from swarm.errors import ConfigError
from swarm.runtime.executor import Executor
from swarm.runtime.executor_proc import detect_isolation, runnable_levels
from swarm.taskapi import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_S, DataPlane, TaskPolicy

ROOT = os.geteuid() == 0
LEVELS = runnable_levels()
needs_sandbox = pytest.mark.skipif(
    "sandbox" not in LEVELS, reason="bubblewrap is missing or cannot start here (no user namespaces?)"
)
needs_root = pytest.mark.skipif(not ROOT, reason="only a node running as root can run tasks as another user")
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (tmp_path sits below a 0700 directory when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="swarm-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[Executor]:
    async with Executor(slots=1, node_id="n1", work_dir=tmp_path / "work", registry_factory=FACTORY) as ex:
        yield ex


async def run(ex: Executor, task_type: str, payload: dict[str, Any] | None = None, **kw: Any) -> Any:
    outcome = await ex.run("t", 1, task_type, payload or {}, kw.pop("timeout", 10), **kw)
    assert outcome.ok, outcome.error
    return outcome.result


# -- levels -------------------------------------------------------------------------------------------------
def test_the_executor_detects_what_the_probe_reports() -> None:
    assert tuple(sorted(LEVELS, key=ISOLATION_LEVELS.index)) == LEVELS
    assert detect_isolation() == LEVELS[-1]
    assert probe_capabilities().isolation == LEVELS[-1]
    assert probe_capabilities(isolation="process").isolation == "process"
    assert ("process" in LEVELS) is not ROOT  # a root node never offers the "process" level


async def test_the_executor_runs_at_the_strongest_level_by_default(ex: Executor) -> None:
    assert ex.isolation == LEVELS[-1]


async def test_a_level_the_machine_cannot_give_is_a_config_error(tmp_path: Path) -> None:
    if LEVELS[-1] == "sandbox":
        pytest.skip("this machine gives every level")
    with pytest.raises(ConfigError, match="cannot give isolation 'sandbox'"):
        async with Executor(work_dir=tmp_path, isolation="sandbox"):
            pass


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="isolation must be one of process, user, sandbox"):
        Executor(isolation="jail")


# -- every attempt: its own directory, a clean environment, default limits -----------------------------------
@pytest.mark.parametrize("level", LEVELS)
async def test_each_attempt_starts_in_a_private_empty_directory(level: str, open_dir: Path) -> None:
    """An untouched directory serves the slot's next attempt: under the same path in a sandbox (nothing
    of the attempt is left alive to use it), renamed at the "process" level (a program it started may
    still write to the path), never at the "user" level (one may hold it open). One an attempt wrote
    to is removed, whatever the level."""
    if level == "user" and not _nobody_can_run_python():
        pytest.skip("user nobody cannot read this Python installation (a home directory's?)")
    async with Executor(slots=1, work_dir=open_dir / "work", registry_factory=FACTORY, isolation=level) as ex:
        first = await run(ex, "test_whoami")
        assert await run(ex, "test_probe", {"what": "write", "path": "marker"}) == "written"
        second = await run(ex, "test_whoami")
        third = await run(ex, "test_whoami")
        for seen in (first, second, third):
            assert seen["cwd"] == seen["work_dir"] and seen["work_dir_mode"] == 0o700
            assert seen["env"]["HOME"] == seen["env"]["TMPDIR"] == seen["tempdir"] == seen["work_dir"]
            assert Path(seen["work_dir"]).is_relative_to(open_dir / "work")
        assert await run(ex, "test_probe", {"what": "listdir", "path": "."}) == []
        assert first["work_dir"] != second["work_dir"]  # the write made the directory the written one's
        if ex.isolation == "sandbox":
            assert second["work_dir"] == third["work_dir"]
        else:
            assert second["work_dir"] != third["work_dir"]
        await asyncio.sleep(0.5)  # removal happens off the attempt's path
        assert not list((open_dir / "work").rglob("marker"))
        assert not Path(first["work_dir"]).exists()


async def test_the_directory_goes_even_when_the_attempt_is_killed(ex: Executor, tmp_path: Path) -> None:
    outcome = await ex.run("slow", 1, "test_probe", {"what": "write_and_sleep"}, 0.5)
    assert outcome.kind == "timeout"
    await asyncio.sleep(0.5)
    assert not list((tmp_path / "work").rglob("marker"))


async def test_task_code_never_sees_the_nodes_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_TEST_SECRET", "hunter2")
    async with Executor(slots=1, work_dir=tmp_path, registry_factory=FACTORY) as ex:
        env = (await run(ex, "test_whoami"))["env"]
    assert "SWARM_TEST_SECRET" not in env
    assert env["PATH"] == "/usr/bin:/bin" and env["LANG"] == "C.UTF-8"
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "SWARM_NODE_ID", "SWARM_TASK_ID", "SWARM_ATTEMPT",
                        "SWARM_WORK_DIR", "LC_CTYPE"}  # fmt: skip


async def test_what_an_attempt_does_to_its_environment_is_gone_in_the_next(tmp_path: Path) -> None:
    async with Executor(slots=1, work_dir=tmp_path, registry_factory=FACTORY) as ex:
        before = (await run(ex, "test_whoami"))["env"]
        assert await run(ex, "test_probe", {"what": "setenv"}) == "set"
        after = (await run(ex, "test_whoami"))["env"]
    ignore = {"SWARM_WORK_DIR": "", "HOME": "", "TMPDIR": ""}  # the directory's name may differ
    assert {**before, **ignore} == {**after, **ignore}


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is a Linux scheduling policy")
async def test_task_code_runs_as_batch_work(ex: Executor) -> None:
    assert (await run(ex, "test_whoami"))["scheduler"] == os.SCHED_BATCH


async def test_a_task_without_a_timeout_gets_the_default_one(tmp_path: Path) -> None:
    assert TaskPolicy().default_timeout_s == DEFAULT_TIMEOUT_S == 300.0
    policy = TaskPolicy(default_timeout_s=0.5)
    async with Executor(slots=1, policy=policy, work_dir=tmp_path) as ex:
        started = time.monotonic()
        outcome = await ex.run("slow", 1, "sleep", {"seconds": 30}, None)
    assert outcome.kind == "timeout" and "timed out after 0.5" in (outcome.error or "")
    assert time.monotonic() - started < 5


async def test_memory_is_limited_by_default(ex: Executor) -> None:
    assert DEFAULT_MEMORY_LIMIT_MB == 1024
    outcome = await ex.run("hog", 1, "test_alloc", {"mb": DEFAULT_MEMORY_LIMIT_MB + 512}, 10)
    assert outcome.kind in ("error", "crash") and (
        "MemoryError" in (outcome.error or "") or outcome.kind == "crash"
    )
    assert (await run(ex, "test_alloc", {"mb": 64})) == 64 * 1024 * 1024


# -- the task user (root only) -------------------------------------------------------------------------------
@needs_root
async def test_a_root_node_runs_task_code_as_nobody(ex: Executor) -> None:
    seen = await run(ex, "test_whoami")
    assert seen["uid"] == seen["euid"] == NOBODY.pw_uid and seen["gid"] == NOBODY.pw_gid
    assert seen["groups"] in ([], [NOBODY.pw_gid])
    assert seen["work_dir_uid"] == NOBODY.pw_uid
    assert ex.isolation in ("user", "sandbox")


@needs_root
async def test_run_as_names_another_user(tmp_path: Path) -> None:
    daemon = pwd.getpwnam("daemon")
    policy = TaskPolicy(run_as="daemon")
    async with Executor(slots=1, policy=policy, work_dir=tmp_path, registry_factory=FACTORY) as ex:
        assert (await run(ex, "test_whoami"))["uid"] == daemon.pw_uid


@needs_root
async def test_run_as_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is root"):
        async with Executor(policy=TaskPolicy(run_as="root"), work_dir=tmp_path):
            pass


@needs_root
async def test_asking_for_the_process_level_as_root_still_drops_privileges(open_dir: Path) -> None:
    ex = Executor(slots=1, work_dir=open_dir, registry_factory=FACTORY, isolation="process")
    if not _nobody_can_run_python():  # then the worker refuses to start rather than run tasks as root
        with pytest.raises(ConfigError, match="who cannot reach the Python standard library"):
            await ex.__aenter__()
        assert ex.isolation == "user"
        return
    async with ex:
        assert ex.isolation == "user"
        assert (await run(ex, "test_whoami"))["uid"] == NOBODY.pw_uid


@needs_root
async def test_a_task_user_who_cannot_reach_its_directory_stops_the_start_not_root_tasks(
    tmp_path: Path,
) -> None:
    # tmp_path sits below pytest's 0700 directory: nobody cannot pass through it without a sandbox.
    with pytest.raises(ConfigError, match="user 'nobody', who cannot reach its work directory"):
        async with Executor(work_dir=tmp_path / "work", registry_factory=FACTORY, isolation="user"):
            pass


def _nobody_can_run_python() -> bool:
    """Whether user nobody runs this very installation: where it cannot read the standard library, the
    interpreter falls back to another one on the machine (a system Python's), which is no use."""
    if shutil.which("setpriv") is None:
        return False
    probe = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
             sys.executable, "-c", "import os, swarm, numpy; print(os.__file__)"]  # fmt: skip
    out = subprocess.run(probe, capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout.strip() == os.__file__


@needs_root
async def test_the_user_level_without_a_sandbox(open_dir: Path) -> None:
    if not _nobody_can_run_python():
        pytest.skip("user nobody cannot read this Python installation (a home directory's?)")
    data = open_dir / "data"
    data.mkdir()
    async with Executor(slots=1, work_dir=open_dir / "work", registry_factory=FACTORY, isolation="user",
                        data=DataPlane(str(data))) as ex:  # fmt: skip
        assert ex.isolation == "user"
        assert (await run(ex, "test_whoami"))["uid"] == NOBODY.pw_uid
        assert await run(ex, "test_probe", {"what": "write", "path": str(data / "out")}) == "written"


@needs_root
async def test_the_data_plane_directory_is_handed_to_the_task_user(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mr" / "old-job").mkdir(parents=True)
    async with Executor(slots=1, work_dir=tmp_path / "work", registry_factory=FACTORY,
                        data=DataPlane(str(data))) as ex:  # fmt: skip
        if ex.isolation != "sandbox":
            pytest.skip("without a sandbox, nobody cannot reach tmp_path")
        target = data / "mr" / "old-job" / "run-0"
        assert await run(ex, "test_probe", {"what": "write", "path": str(target)}) == "written"
    assert target.read_text() == "written by a task" and target.stat().st_uid == NOBODY.pw_uid
    assert os.stat(data).st_uid == NOBODY.pw_uid


# -- the sandbox ---------------------------------------------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the node's loopback that accepts connections."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


@needs_sandbox
async def test_a_sandbox_has_no_network_unless_the_task_asks(ex: Executor, listener: int) -> None:
    connect = {"what": "connect", "host": "127.0.0.1", "port": listener}
    assert ex.isolation == "sandbox"
    assert (await run(ex, "test_probe", connect)).startswith("refused")
    assert await run(ex, "test_probe", connect, network=True) == "connected"
    assert await run(ex, "test_probe_network", connect) == "connected"  # the handler declares it
    assert (await run(ex, "test_probe", connect)).startswith("refused")  # and the default pool stays without


@needs_sandbox
async def test_both_pools_share_the_slots(ex: Executor) -> None:
    await run(ex, "echo", network=True)  # start the network pool's worker first
    outcomes = await asyncio.gather(
        ex.run("a", 1, "sleep", {"seconds": 0.3}, 5, network=True),
        ex.run("b", 1, "sleep", {"seconds": 0.3}, 5),
    )
    assert all(o.ok for o in outcomes)
    first, second = sorted(outcomes, key=lambda o: o.started_at)
    assert second.started_at >= first.finished_at  # one slot: one attempt at a time, whichever pool


@needs_sandbox
async def test_a_sandbox_sees_a_read_only_system_and_only_its_own_directories(tmp_path: Path) -> None:
    secret = tmp_path / "node-secret"
    secret.write_text("the node's key")
    secret.chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    policy = TaskPolicy(allowed_paths=(str(shared),))
    async with Executor(slots=1, policy=policy, work_dir=tmp_path / "work", registry_factory=FACTORY) as ex:
        package = Path(sys.modules["swarm"].__file__ or "").parent

        async def probe(**payload: Any) -> Any:
            return await run(ex, "test_probe", payload)

        assert (await probe(what="read", path=str(secret))).startswith("refused: FileNotFoundError")
        for path in ("/usr/swarm-test", "/etc/swarm-test", str(package / "swarm-test.py")):
            assert (await probe(what="write", path=path)).startswith("refused")
        assert await probe(what="write", path=str(shared / "out")) == "written"
        assert await probe(what="listdir", path=str(tmp_path)) == ["shared", "work"]
        assert not (await probe(what="listdir", path="/proc")).count(str(os.getpid()))


@needs_sandbox
async def test_a_sandbox_is_cleared_between_attempts(ex: Executor) -> None:
    assert "mine" in await run(ex, "test_probe", {"what": "touch_tmp", "name": "mine"})
    assert "mine" not in await run(ex, "test_probe", {"what": "touch_tmp", "name": "next"})
    assert "locked" in await run(ex, "test_probe", {"what": "lock_tmp", "name": "locked"})
    assert "locked" not in await run(ex, "test_probe", {"what": "touch_tmp", "name": "after"})
    # POSIX shared memory too, which multiprocessing's locks use: its own, and emptied.
    assert await run(ex, "test_probe", {"what": "write", "path": "/dev/shm/mine"}) == "written"
    assert await run(ex, "test_probe", {"what": "listdir", "path": "/dev/shm"}) == []
    assert await run(ex, "test_probe", {"what": "semaphore"}) == "acquired"
    pid = await run(ex, "test_probe", {"what": "spawn"})
    assert (
        await run(ex, "test_probe", {"what": "alive", "pid": pid})
        == "refused: ProcessLookupError: [Errno 3] No such process"
    )


@needs_sandbox
async def test_a_sandboxed_command_runs_an_allowed_program_in_a_clean_environment(tmp_path: Path) -> None:
    policy = TaskPolicy(allow_command=True, allowed_commands=("/usr/bin/env",))
    async with Executor(slots=1, policy=policy, work_dir=tmp_path) as ex:
        result = await run(ex, "command", {"argv": ["env"], "env": {"EXTRA": "1"}})
        assert result["returncode"] == 0
        env = dict(line.split("=", 1) for line in result["stdout"].splitlines())
        assert set(env) == {"PATH", "HOME", "LANG", "EXTRA"} and env["PATH"] == "/usr/bin:/bin"
        refused = await ex.run("t", 1, "command", {"argv": ["/bin/sh", "-c", "id"]}, 5)
        assert refused.kind == "refused" and "allowed_commands" in (refused.error or "")


async def test_an_attempt_never_sees_what_the_one_before_left(ex: Executor) -> None:
    first = await run(ex, "test_whoami")
    assert await run(ex, "test_probe", {"what": "write", "path": "left-behind"}) == "written"
    second = await run(ex, "test_probe", {"what": "listdir", "path": "."})
    assert second == []
    assert not Path(first["work_dir"]).exists()


# -- the sandbox's shape, as a command line ------------------------------------------------------------------
def _mounts(argv: list[str]) -> list[tuple[str, str]]:
    """(option, destination) of every mount-like option, in order."""
    found, i = [], 0
    while i < len(argv):
        option = argv[i]
        if option in ("--bind", "--ro-bind", "--dev-bind", "--symlink"):
            found.append((option, argv[i + 2]))
            i += 3
        elif option in ("--tmpfs", "--proc", "--dev", "--dir"):
            found.append((option, argv[i + 1]))
            i += 2
        else:
            i += 1
    return found


@pytest.mark.parametrize("root", [True, False])
def test_the_sandbox_command_line(root: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from swarm.runtime import executor_proc

    monkeypatch.setattr(executor_proc, "is_root", lambda: root)
    package, work, allowed = tmp_path / "pkg", tmp_path / "work", tmp_path
    package.mkdir()
    work.mkdir()
    spec = executor_proc.SandboxSpec("bwrap", (str(package),), (str(work), str(allowed)), False, str(work))
    argv = executor_proc.sandbox_argv(spec)
    assert ("--unshare-user" in argv) is not root and "--unshare-net" in argv and "--die-with-parent" in argv
    assert argv[-2:] == ["--chdir", str(work)]
    mounts = _mounts(argv)
    where = {m: i for i, m in enumerate(mounts)}
    assert where[("--tmpfs", "/tmp")] < where[("--bind", str(allowed))] < where[("--bind", str(work))]
    assert where[("--bind", str(allowed))] < where[("--ro-bind", str(package))]  # read-only wins inside
    assert ("--dir", str(tmp_path.parent)) in where  # parents made 0755, not copied from the host
    assert "--perms" in argv and argv[argv.index("--tmpfs") - 1] == "1777"
    assert ("--ro-bind", "/usr") in where and ("--proc", "/proc") in where
    with_network = executor_proc.sandbox_argv(dataclasses.replace(spec, network=True))
    assert "--unshare-net" not in with_network
    # A node started from a script in /tmp has /tmp on its import path: the sandbox keeps its own /tmp.
    holding = dataclasses.replace(spec, readonly=("/tmp", "/", str(package)))
    mounts = _mounts(executor_proc.sandbox_argv(holding))
    assert ("--ro-bind", "/tmp") not in mounts and ("--ro-bind", "/") not in mounts
    assert ("--tmpfs", "/tmp") in mounts and ("--ro-bind", str(package)) in mounts
    # ... and empties it after each attempt only where no allowed path is bound over it.
    assert executor_proc.private_dirs(spec) == ("/tmp", "/dev/shm")
    over_tmp = dataclasses.replace(spec, writable=(str(work), "/tmp"))
    assert executor_proc.private_dirs(over_tmp) == ("/dev/shm",)
    assert ("--tmpfs", "/dev/shm") in mounts and ("--ro-bind", "/dev") not in mounts
