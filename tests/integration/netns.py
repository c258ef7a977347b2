"""Two hosts on one machine: network namespaces joined by a veth pair, the link shaped by tc.

Each host is a namespace of its own with a loopback and one end of the veth pair, so processes started
in one reach the other only across the link, as two machines on a LAN would. `TwoHosts.shape` puts a
rate limit (tc `tbf`) and, where the kernel has `sch_netem`, a delay on both ends. Everything is made
by the caller and removed on exit; nothing touches the machine's own interfaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from swarm.runtime.brokerconf import mosquitto_config
from tests.conftest import _TEST_USER, MosquittoServer, _write_security

__all__ = ["Host", "Shaping", "TwoHosts", "broker_in", "unavailable"]

#: The link's addresses: a /24 the tests own inside their namespaces only.
SUBNET = "10.231.{}.{}"


@dataclass(frozen=True, slots=True)
class Host:
    """One namespace: run a command in it with `prefix + argv`; it is reached at `address`."""

    netns: str
    address: str
    device: str

    @property
    def prefix(self) -> list[str]:
        """What makes a command run inside this host."""
        return ["ip", "netns", "exec", self.netns]


@dataclass(frozen=True, slots=True)
class Shaping:
    """What `TwoHosts.shape` could apply: the rate always, the delay only with `sch_netem`."""

    rate_mbit: float
    delay_ms: float
    delay_applied: bool


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def unavailable() -> str | None:
    """Why two namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"swprobe{os.getpid()}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"network namespaces are not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class TwoHosts:
    """Namespaces `a` and `b` joined by a veth pair (10.231.N.1 and .2); a context manager."""

    def __init__(self, tag: int | None = None) -> None:
        n = (tag if tag is not None else os.getpid()) % 250 + 1
        self.a = Host(f"swa{n}", SUBNET.format(n, 1), f"swva{n}")
        self.b = Host(f"swb{n}", SUBNET.format(n, 2), f"swvb{n}")

    def __enter__(self) -> TwoHosts:
        self._remove()
        try:
            for host in (self.a, self.b):
                self._run("netns", "add", host.netns)
            self._run("link", "add", self.a.device, "type", "veth", "peer", "name", self.b.device)
            for host in (self.a, self.b):
                self._run("link", "set", host.device, "netns", host.netns)
                self._run("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.device)
                self._run("-n", host.netns, "link", "set", host.device, "up")
                self._run("-n", host.netns, "link", "set", "lo", "up")
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._remove()

    def shape(self, rate_mbit: float, delay_ms: float) -> Shaping:
        """Limit both directions of the link to `rate_mbit` and, where netem exists, add `delay_ms`."""
        delay_applied = False
        for host in (self.a, self.b):
            tc = [*host.prefix, "tc", "qdisc", "replace", "dev", host.device, "root"]
            netem = subprocess.run(
                [*tc, "netem", "delay", f"{delay_ms}ms", "rate", f"{rate_mbit}mbit", "limit", "100000"],
                capture_output=True,
                text=True,
                check=False,
            )
            if netem.returncode == 0:
                delay_applied = True
                continue
            # A token bucket holding ~10 ms at the rate (at least one full-sized frame), bounded queueing.
            burst = max(int(rate_mbit * 1e6 / 8 / 100), 16 * 1024)
            subprocess.run(
                [*tc, "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "50ms"],
                capture_output=True,
                text=True,
                check=True,
            )
        return Shaping(rate_mbit, delay_ms, delay_applied)

    def _run(self, *args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _remove(self) -> None:
        for host in (self.a, self.b):
            _ip("netns", "del", host.netns)  # takes its end of the veth pair, and so the pair, with it


@contextlib.contextmanager
def broker_in(host: Host, directory: Path, port: int = 18830) -> Iterator[MosquittoServer]:
    """A mosquitto with the test fixture's TLS and login, listening on `host`'s address inside it, until
    the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    files, ca_pem = _write_security(directory, password)
    conf = directory / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, host.address, directory / "mosquitto.log", security=files))
    with (directory / "mosquitto.out").open("wb") as out:
        proc = subprocess.Popen([*host.prefix, "mosquitto", "-c", str(conf)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while not _accepts(host, port):
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(directory / 'mosquitto.out').read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not listen within 10 s")
            time.sleep(0.1)
        url = f"mqtts://{host.address}:{port}"
        log_path = directory / "mosquitto.log"
        yield MosquittoServer(host.address, port, url, log_path, _TEST_USER, password, ca_pem, files.cafile)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _accepts(host: Host, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({host.address!r}, {port}), timeout=1).close()"
    done = subprocess.run([*host.prefix, sys.executable, "-c", probe], capture_output=True, check=False)
    return done.returncode == 0
