"""Where `swarm demo sales` runs: a node of the configured cluster, or one it starts for itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from swarm.apiclient import ApiClient, ApiError
from swarm.config import NodeConfig
from swarm.errors import SwarmError

__all__ = ["LocalNode", "cluster_api"]

_NODE_ENV_DROP = (
    "SWARM_BROKER",
    "SWARM_CLUSTER",
    "SWARM_TOKEN",
    "SWARM_API",
    "SWARM_CONFIG",
    "SWARM_BROKER_USERNAME",
    "SWARM_BROKER_PASSWORD",
    "SWARM_BROKER_CA",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalNode:
    """A `swarm join` child process of a throwaway cluster under `home` (its `$SWARM_HOME`), on
    loopback only: the zero-setup path (it makes the cluster's secrets and an embedded broker)."""

    def __init__(self, home: Path, cluster: str, slots: int | None = None) -> None:
        self.home, self.cluster, self.slots = home, cluster, slots
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = home / "node.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> str:
        """Start the node and wait until its API answers and a coordinator acts; the admin token."""
        env = {k: v for k, v in os.environ.items() if k not in _NODE_ENV_DROP}
        env.update(
            SWARM_HOME=str(self.home),
            SWARM_MDNS_INTERFACES="127.0.0.1",
            SWARM_BROKER_LISTEN="127.0.0.1",
            SWARM_DATA_LISTEN="127.0.0.1",
            SWARM_DATA_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        argv = [sys.executable, "-m", "swarm.cli", "join", "--cluster", self.cluster, "--name", "demo-node"]
        argv += ["--data-dir", str(self.home / "node"), "--api", self.url.removeprefix("http://")]
        if self.slots:
            argv += ["--slots", str(self.slots)]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SwarmError(f"the demo node exited ({self._proc.returncode}):\n{self._tail()}")
            token = self._token()
            if token is not None:
                with contextlib.suppress(ApiError):
                    if ApiClient(self.url, token, timeout=5).status().get("coordinator"):
                        return token
            time.sleep(0.3)
        raise SwarmError(f"the demo node was not ready within {timeout:g} s:\n{self._tail()}")

    def _token(self) -> str | None:
        from swarm.trust.authority import Authority

        if not Authority.exists(self.cluster, home=self.home):
            return None
        return Authority.load(self.cluster, home=self.home).admin_credential().to_token()

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (a clean leave), then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def cluster_api(config: NodeConfig, token: str | None) -> tuple[str, str] | None:
    """(API URL, token) of an alive member of the configured cluster, or None when this machine has no
    credential for it or no member serves an API within a few seconds."""
    from swarm.runtime.identity import client_credential, resolve_broker
    from swarm.workflowcli import discover_api

    try:
        credential = client_credential(config.cluster, token)
        url = await discover_api(config, credential, lambda known: resolve_broker(config, known))
    except (SwarmError, OSError):
        return None
    return url, credential.to_token()
