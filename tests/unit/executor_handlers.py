"""Task handlers that exist only for the executor tests, and the registry factory that adds them.

They live in their own small module, not in the test file, because every worker process imports the
factory's module: this one imports nothing heavier than swarm itself, so test workers start quickly.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from swarm.errors import Fatal, Retry
from swarm.registry import Registry
from swarm.taskapi import TaskContext

FACTORY = f"{__name__}:make_registry"


class _Handler:
    version = "0"

    def validate(self, payload: dict[str, Any]) -> None:
        pass


class Env(_Handler):
    name = "test_env"

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        keys = ("SWARM_NODE_ID", "SWARM_TASK_ID", "SWARM_ATTEMPT", "SWARM_WORK_DIR")
        return {"pid": os.getpid(), "cwd": os.getcwd(), "ctx": [ctx.node_id, ctx.task_id, ctx.attempt]} | {
            key: os.environ.get(key) for key in keys
        }


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
    for handler in (Env(), Exit(), Raise(), Alloc()):
        registry.register(handler, origin="tests")
    return registry
