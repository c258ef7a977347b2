"""Shared fixtures.

`mosquitto` / `mosquitto_module`: a real mosquitto on a free loopback port, configured by the same
`mosquitto_config` that `swarm join` uses, so the integration tests run against the settings users
get: TLS only (a throwaway cluster CA made by `swarm.trust.tls`), no anonymous access, a password
file and an ACL. The fixture has one login, `username`/`password`, allowed everything under `swarm/`;
`login()` gives what a `Transport` needs. The fixtures are synchronous (a plain child process), so
sync and async tests of any event loop scope can use them.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swarm.runtime.brokerconf import (
    MosquittoFiles,
    UserEntry,
    find_mosquitto,
    free_port,
    mosquitto_config,
    mosquitto_passwords,
    port_accepts,
    url_for,
)
from swarm.runtime.mqtt import BrokerLogin
from swarm.trust.tls import make_ca, make_server_cert

_LOOPBACK = "127.0.0.1"
_START_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3
_TEST_USER = "swarm-test"


@dataclass(frozen=True)
class MosquittoServer:
    """A running test broker: connect to `url` (mqtts://host:port) with `login()`, or to `host` and
    `port` with `username`, `password` and the CA in `ca_pem` (also written to `ca_path`)."""

    host: str
    port: int
    url: str
    log_path: Path
    username: str
    password: str = field(repr=False)
    ca_pem: bytes = field(repr=False)
    ca_path: Path

    def login(self) -> BrokerLogin:
        """The login for `swarm.runtime.mqtt.Transport`."""
        return BrokerLogin(self.username, self.password, self.ca_pem)


def _log_tail(*paths: Path) -> str:
    lines: list[str] = []
    for path in paths:
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-20:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _write_security(directory: Path, password: str) -> tuple[MosquittoFiles, bytes]:
    """The fixture's TLS material and its one all-powerful login; returns the files and the CA PEM."""
    ca_pem, ca_key = make_ca("test")
    cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
    files = MosquittoFiles.under(directory)
    # Not `mosquitto_acl`: the fixture's one login serves nodes and clients of any cluster.
    users = {_TEST_USER: UserEntry(password, "user", "admin")}
    files.password_file.write_text(mosquitto_passwords(users))
    files.acl_file.write_text(f"user {_TEST_USER}\ntopic readwrite swarm/#\n")
    files.cafile.write_bytes(ca_pem)
    files.certfile.write_bytes(cert_pem)
    files.keyfile.write_bytes(key_pem)
    files.keyfile.chmod(0o600)
    return files, ca_pem


def _run_mosquitto(directory: Path) -> Iterator[MosquittoServer]:
    executable = find_mosquitto()
    if executable is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto); network tests need a real broker")
    conf_path, log_path, out_path = (directory / n for n in ("mosquitto.conf", "mosquitto.log", "stderr"))
    password = secrets.token_urlsafe(16)
    files, ca_pem = _write_security(directory, password)
    tail = ""
    for _ in range(_PORT_ATTEMPTS):  # the free port may be taken before mosquitto binds it
        port = free_port(_LOOPBACK)
        conf_path.write_text(mosquitto_config(port, _LOOPBACK, log_path, security=files))
        with out_path.open("wb") as out:
            process = subprocess.Popen(
                [executable, "-c", str(conf_path)], stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if port_accepts(_LOOPBACK, port):
                break
            time.sleep(0.002)
        if process.poll() is None and port_accepts(_LOOPBACK, port):
            break
        _stop(process)
        tail = _log_tail(out_path, log_path)
        if "in use" not in tail:
            pytest.fail(f"mosquitto did not start on port {port}:\n{tail}")
    else:
        pytest.fail(f"mosquitto found no free port:\n{tail}")
    try:
        yield MosquittoServer(
            host=_LOOPBACK,
            port=port,
            url=url_for(_LOOPBACK, port, tls=True),
            log_path=log_path,
            username=_TEST_USER,
            password=password,
            ca_pem=ca_pem,
            ca_path=files.cafile,
        )
    finally:
        _stop(process)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A fresh mosquitto for one test: no retained messages or sessions from other tests."""
    yield from _run_mosquitto(tmp_path)


@pytest.fixture(scope="module")
def mosquitto_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """One mosquitto shared by a module's tests, for suites where a start per test adds up."""
    yield from _run_mosquitto(tmp_path_factory.mktemp("mosquitto"))
