"""Task handlers that exist only for the executor tests, and the registry factory that adds them.

They live in their own small module, not in the test file, because every worker process imports the
factory's module: this one imports nothing heavier than swarm itself, so test workers start quickly.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from swarm.errors import Fatal, Retry
from swarm.registry import Registry
from swarm.taskapi import TaskContext

FACTORY = f"{__name__}:make_registry"
#: Tells worker processes apart: a sandboxed worker's pid is its pid namespace's, the same in every one.
WORKER_TOKEN = secrets.token_hex(8)


class _Handler:
    version = "0"

    def validate(self, payload: dict[str, Any]) -> None:
        pass


class Env(_Handler):
    name = "test_env"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        keys = ("SWARM_NODE_ID", "SWARM_TASK_ID", "SWARM_ATTEMPT", "SWARM_WORK_DIR")
        return (
            {"pid": os.getpid(), "cwd": os.getcwd(), "ctx": [ctx.node_id, ctx.task_id, ctx.attempt]}
            | {key: os.environ.get(key) for key in keys}
            | {"worker": WORKER_TOKEN, "work_dir": ctx.work_dir}
        )


class Whoami(_Handler):
    """Who and where the task runs, and what it can see and do."""

    name = "test_whoami"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        info = os.stat(ctx.work_dir)
        return {
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "work_dir": ctx.work_dir,
            "work_dir_mode": info.st_mode & 0o777,
            "work_dir_uid": info.st_uid,
            "tempdir": tempfile.gettempdir(),
            "tmp": sorted(os.listdir("/tmp")),
            "scheduler": os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None,
            "worker": WORKER_TOKEN,
        }


class Probe(_Handler):
    """Try one thing the sandbox should or should not allow; report what happened."""

    name = "test_probe"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        what = payload["what"]
        try:
            if what == "connect":
                with socket.create_connection((payload["host"], payload["port"]), timeout=2):
                    return "connected"
            if what == "write":
                with open(payload["path"], "w") as f:
                    f.write("written by a task")
                return "written"
            if what == "read":
                with open(payload["path"]) as f:
                    return f.read()
            if what == "listdir":
                return sorted(os.listdir(payload["path"]))
            if what == "spawn":  # a program that outlives the attempt, unless something kills it
                proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
                return proc.pid
            if what == "write_and_sleep":  # leaves a mark in its work dir, then waits to be killed
                Path(ctx.work_dir, "marker").write_text("x")
                time.sleep(60)
            if what == "alive":
                os.kill(payload["pid"], 0)
                return "alive"
            if what == "setenv":  # what a careless task leaves behind for the next attempt
                os.environ["LEFT_BEHIND"] = "1"
                os.environ["PATH"] = "/nowhere"
                del os.environ["LANG"]
                return "set"
            if what == "touch_tmp":
                with open(os.path.join("/tmp", payload["name"]), "w") as f:
                    f.write("x")
                return sorted(os.listdir("/tmp"))
            if what == "semaphore":  # POSIX shared memory, as multiprocessing's locks use it
                import multiprocessing

                multiprocessing.Lock().acquire()
                return "acquired"
            if what == "lock_tmp":  # a file in a directory its owner may no longer change
                locked = os.path.join("/tmp", payload["name"])
                os.mkdir(locked)
                Path(locked, "secret").write_text("x")
                os.chmod(locked, 0o500)
                return sorted(os.listdir("/tmp"))
        except OSError as exc:
            return f"refused: {type(exc).__name__}: {exc}"
        raise ValueError(what)


class DeclaredNetwork(Probe):
    """A handler that says its tasks need the network, as a plugin that talks to peers would."""

    name = "test_probe_network"
    network = True


class Exit(_Handler):
    name = "test_exit"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        if payload.get("signal"):
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(3)


class Raise(_Handler):
    name = "test_raise"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        what = payload["what"]
        if what == "retry":
            raise Retry("disk busy", delay=2.5)
        if what == "fatal":
            raise Fatal("never works")
        if what == "exit":
            raise SystemExit(1)
        if what == "unserialisable":
            return {"when": object()}
        return {"value": 1 / 0}


class Alloc(_Handler):
    name = "test_alloc"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        block = bytearray(payload["mb"] * 1024 * 1024)
        return len(block)


def make_registry() -> Registry:
    registry = Registry.from_entry_points()
    for handler in (Env(), Exit(), Raise(), Alloc(), Whoami(), Probe(), DeclaredNetwork()):
        registry.register(handler, origin="tests")
    return registry
