"""A broker the node starts itself, so that `swarm join` works on a machine with nothing set up.

Theory of operation: mosquitto is preferred whenever it is installed. It runs as a child process with
a generated configuration (see `brokerconf.mosquitto_config`) and is ready when its port accepts a
connection, which takes a few milliseconds, so the port is polled rather than slept on. The child
runs in its own session: a Ctrl-C in the terminal reaches the node only, and the node stops the
broker last, after it has said goodbye to its peers through it.

amqtt, a pure-Python broker, runs in-process when mosquitto is missing (or is asked for). It is a
degraded fallback: MQTT 3.1.1 only, slower, with weaker keep-alive handling; `kind` tells callers
which one they got so `swarm status` can say so.

A port of 0 means "any free port": one is picked by binding port 0 and releasing it, which leaves a
small window for another process to take it; a failed bind is retried with a fresh port.

Security (`BrokerSecurity`, see `brokerconf`): the broker serves TLS only and admits only the cluster's
principals, each limited by the ACL table. `replace_users` changes who is admitted while the broker
runs. mosquitto rereads its password and ACL files on SIGHUP; the reload happens later in its event
loop, so the broker writes a fresh throwaway login (a "probe", with no rights at all) with every set
of files and waits until that login is accepted: from then on the new files are in force. mosquitto
2.0.11 also disconnects, on reload, every client whose login is no longer valid (measured; see
tests/integration/test_broker_security.py), and it disconnects a client that publishes to a topic
its ACL denies. amqtt checks the in-memory users at every login, publish and delivery, and the
broker closes the connections of removed users itself.

`security=None` runs an open, anonymous, plaintext broker. It must be asked for by name: it serves
tests of the transport alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from swarm.errors import LocalError
from swarm.runtime.brokerconf import (
    BrokerSecurity,
    MosquittoFiles,
    UserEntry,
    client_host,
    find_mosquitto,
    free_port,
    mosquitto_config,
    port_is_free,
    url_for,
    write_mosquitto_files,
)
from swarm.trust.tls import client_context

__all__ = ["BrokerKind", "BrokerReloadError", "BrokerStartError", "EmbeddedBroker", "Prefer"]

log = logging.getLogger(__name__)

BrokerKind = Literal["mosquitto", "amqtt"]
Prefer = Literal["auto", "mosquitto", "amqtt"]

_PORT_ATTEMPTS = 3
_STOP_GRACE_S = 3.0
_LOG_TAIL_LINES = 20
_PROBE_USER = "swarm-probe"
_RELOAD_TIMEOUT_S = 5.0


class BrokerStartError(LocalError):
    """The embedded broker could not be started; the message carries the broker's own words."""


class BrokerReloadError(LocalError):
    """mosquitto did not take up a new set of users in time (or died while reloading)."""


class EmbeddedBroker:
    """An MQTT broker owned by this process, as an async context manager.

    Usage::

        async with EmbeddedBroker(data_dir=state / "broker", security=security) as broker:
            ...  # connect to broker.url; broker.kind is "mosquitto" or "amqtt"

    `data_dir` holds the generated configuration, the password, ACL and TLS files, the broker's log
    and, with `persistence=True`, mosquitto's database; without it a temporary directory is used and
    removed on exit. `max_message_bytes` is the largest message the cluster sends
    (`NodeConfig.max_message_bytes` by default); mosquitto refuses larger packets.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        prefer: Prefer = "auto",
        *,
        security: BrokerSecurity | None,
        persistence: bool = False,
        start_timeout: float = 5.0,
        max_message_bytes: int | None = None,
    ) -> None:
        """Describe the broker to start; nothing happens until the context is entered."""
        if prefer not in ("auto", "mosquitto", "amqtt"):
            raise ValueError(f"prefer must be 'auto', 'mosquitto' or 'amqtt', got {prefer!r}")
        if not 0 <= port < 65536:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self._host = host
        self._requested_port = port
        self._data_dir = data_dir
        self._prefer = prefer
        self._security = security
        self._persistence = persistence
        self._start_timeout = start_timeout
        self._max_message_bytes = max_message_bytes
        self._temp_dir: Path | None = None
        self._port: int | None = None
        self._kind: BrokerKind | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._amqtt: Any = None
        self._files: MosquittoFiles | None = None
        # One reload at a time: files written by a second call before the first reload would make the
        # first call's probe wait for a login that never comes.
        self._reload_lock = asyncio.Lock()
        self._tls: ssl.SSLContext | None = None if security is None else client_context(security.ca_pem)

    @property
    def host(self) -> str:
        """The address the broker listens on, as given."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port the broker listens on (the chosen one when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the broker is not running")
        return self._port

    @property
    def kind(self) -> BrokerKind:
        """Which broker runs: "mosquitto" or the degraded "amqtt" fallback."""
        if self._kind is None:
            raise RuntimeError("the broker is not running")
        return self._kind

    @property
    def url(self) -> str:
        """The URL a client on this machine connects to, e.g. "mqtts://127.0.0.1:8883" (mqtt:// without
        security)."""
        return url_for(client_host(self._host), self.port, tls=self._security is not None)

    @property
    def security(self) -> BrokerSecurity | None:
        """The users and TLS material in force (None for an open broker)."""
        return self._security

    @property
    def running(self) -> bool:
        """Whether the broker still runs: a node that started one watches for it dying under it."""
        if self._process is not None:
            return self._process.returncode is None
        if self._amqtt is not None:
            return bool(self._amqtt.transitions.state == "started")
        return False

    async def __aenter__(self) -> Self:
        """Start the broker; on return it accepts connections."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker."""
        await self.stop()

    async def start(self) -> None:
        """Start mosquitto or amqtt according to `prefer`.

        Raises:
            BrokerStartError: with the broker's log tail, when no broker could be started.
        """
        if self._kind is not None:
            raise RuntimeError("the broker is already running")
        if self._requested_port:
            try:
                port_is_free(self._host or "0.0.0.0", self._requested_port)
            except OSError as exc:
                raise BrokerStartError(
                    f"cannot listen on {self._host}:{self._requested_port}"
                    f" ({exc.strerror or exc}); is another broker running there?"
                ) from exc
        mosquitto = find_mosquitto() if self._prefer != "amqtt" else None
        if self._prefer == "mosquitto" and mosquitto is None:
            raise BrokerStartError(
                "mosquitto is not installed (apt install mosquitto, brew install mosquitto, "
                "pkg install mosquitto), and prefer='mosquitto' rules out the amqtt fallback"
            )
        data_dir = self._prepare_data_dir()
        try:
            if mosquitto is not None:
                try:
                    await self._start_mosquitto(mosquitto, data_dir)
                    return
                except BrokerStartError as exc:
                    if self._prefer == "mosquitto":
                        raise
                    log.warning("mosquitto did not start, falling back to amqtt: %s", exc)
            await self._start_amqtt(data_dir)
        except BaseException:
            self._remove_temp_dir()
            raise

    async def replace_users(self, users: Mapping[str, UserEntry]) -> None:
        """Admit exactly `users` from now on; on return the broker enforces the new set.

        Principals left out can no longer log in, and their live connections are closed (by
        mosquitto itself on reload, by this class for amqtt). TLS material and cluster stay.

        Raises:
            RuntimeError: when the broker is not running or runs without security.
            ValueError: for an invalid principal (see `BrokerSecurity`).
            BrokerReloadError: when mosquitto does not take up the new files in time.
        """
        if self._kind is None:
            raise RuntimeError("the broker is not running")
        if self._security is None:
            raise RuntimeError("the broker runs without security: it has no users to replace")
        security = self._security.with_users(users)
        if self._kind == "amqtt":
            self._security = security
            await self._drop_amqtt_sessions(security)
            return
        async with self._reload_lock:
            await self._reload_mosquitto(security)

    async def _reload_mosquitto(self, security: BrokerSecurity) -> None:
        process = self._process
        assert process is not None and self._files is not None and self._tls is not None
        probe = _fresh_probe()
        # Off the event loop: hashing a thousand passwords takes a tenth of a second.
        directory = self._files.password_file.parent
        await asyncio.to_thread(write_mosquitto_files, directory, security, probe=probe)
        self._security = security
        process.send_signal(signal.SIGHUP)
        dial = client_host(self._host)
        if not await _wait_for_login(process, dial, self.port, self._tls, probe, _RELOAD_TIMEOUT_S):
            raise BrokerReloadError(
                f"mosquitto did not reload its users within {_RELOAD_TIMEOUT_S} s"
                f" (status {process.returncode})"
            )

    async def _drop_amqtt_sessions(self, security: BrokerSecurity) -> None:
        """Close the connections of principals no longer admitted.

        The topic filter already refuses them everything; closing the connection tells them so.
        """
        for session, handler in list(self._amqtt.sessions.values()):
            if session.username in security.users or session.transitions.state != "connected":
                continue
            log.info("closing the connection of removed principal %s", session.username)
            with contextlib.suppress(Exception):  # a connection closing under us is what we want
                await handler.handle_connection_closed()

    async def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after a grace period. Safe to call twice."""
        try:
            if self._process is not None:
                await _terminate(self._process)
            if self._amqtt is not None:
                try:
                    await self._amqtt.shutdown()
                except Exception:  # a failing shutdown must not mask why we are stopping
                    log.warning("amqtt broker shutdown failed", exc_info=True)
        finally:
            self._process = None
            self._amqtt = None
            self._kind = None
            self._port = None
            self._files = None
            self._remove_temp_dir()

    def _prepare_data_dir(self) -> Path:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            return self._data_dir
        self._temp_dir = Path(tempfile.mkdtemp(prefix="swarm-broker-"))
        return self._temp_dir

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _ports(self) -> list[int]:
        """Ports to try: the one asked for, or a few fresh free ones."""
        if self._requested_port:
            return [self._requested_port]
        return [free_port(self._host or "0.0.0.0") for _ in range(_PORT_ATTEMPTS)]

    async def _start_mosquitto(self, executable: str, data_dir: Path) -> None:
        conf_path = data_dir / "mosquitto.conf"
        log_path = data_dir / "mosquitto.log"
        out_path = data_dir / "mosquitto.out"  # what it prints before its log file is open
        persistence_dir = data_dir if self._persistence else None
        probe: tuple[str, str] | None = None
        if self._security is not None:
            probe = _fresh_probe()
            security = self._security
            self._files = await asyncio.to_thread(write_mosquitto_files, data_dir, security, probe=probe)
        error = ""
        for port in self._ports():
            for path in (log_path, out_path):
                if path.exists():  # keep the previous run's log for a post-mortem
                    path.replace(path.with_name(path.name + ".1"))
            conf_path.write_text(
                mosquitto_config(
                    port,
                    self._host,
                    log_path,
                    persistence_dir,
                    security=self._files,
                    max_message_bytes=self._max_message_bytes,
                )
            )
            with out_path.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    executable,
                    "-c",
                    str(conf_path),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            dial = client_host(self._host)
            try:
                ready = await _wait_until_accepting(process, dial, port, self._start_timeout)
                if ready and probe is not None and self._tls is not None:
                    # A login answered proves the event loop runs, with its SIGHUP handler installed.
                    ready = await _wait_for_login(process, dial, port, self._tls, probe, self._start_timeout)
            except BaseException:  # cancelled while starting: leave no orphan behind
                await _terminate(process)
                raise
            if ready:
                self._process, self._port, self._kind = process, port, "mosquitto"
                log.info("mosquitto listening on %s:%d (log %s)", self._host, port, log_path)
                return
            if process.returncode is None:
                await _terminate(process)
                error = f"mosquitto did not accept connections on port {port} within {self._start_timeout} s"
            else:
                error = f"mosquitto exited with status {process.returncode} (port {port})"
            tail = _tail(out_path, log_path)
            error = f"{error}; config {conf_path}; log tail:\n{tail}"
            if "in use" not in tail:
                break
        raise BrokerStartError(error)

    async def _start_amqtt(self, data_dir: Path) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerStartError(
                "no broker available: mosquitto is not installed and amqtt cannot be imported"
            ) from exc
        _quiet_amqtt_logging()
        if self._persistence:
            log.warning("the amqtt fallback keeps retained messages in memory only")
        bind_host = f"[{self._host}]" if ":" in self._host else self._host
        listener: dict[str, Any] = {"type": "tcp"}
        # Plugins are named explicitly: the default set also logs every packet and publishes $SYS topics.
        plugins: dict[str, Any] = {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
        }
        broker_class: Any = Broker
        if self._security is not None:
            from swarm.runtime.amqttauth import GuardedBroker

            broker_class = GuardedBroker
            files = await asyncio.to_thread(write_mosquitto_files, data_dir, self._security)
            listener |= {"ssl": True, "certfile": str(files.certfile), "keyfile": str(files.keyfile)}
            plugins = {
                f"swarm.runtime.amqttauth.{name}": {"security": self._current_security}
                for name in ("SwarmAuthPlugin", "SwarmTopicPlugin")
            }
        error: BaseException | None = None
        for port in self._ports():
            config = {
                "listeners": {"default": listener | {"bind": f"{bind_host}:{port}"}},
                "plugins": plugins,
            }
            broker = broker_class(config)
            try:
                await broker.start()
            except Exception as exc:  # amqtt wraps the OSError of a failed bind in BrokerError
                error = exc
                continue
            self._amqtt, self._port, self._kind = broker, port, "amqtt"
            log.warning("running the amqtt fallback broker (MQTT 3.1.1 only) on %s:%d", self._host, port)
            return
        raise BrokerStartError(f"amqtt broker did not start on {self._host}: {error}") from error

    def _current_security(self) -> BrokerSecurity:
        """What the amqtt plugins check against: read at every check, so a replacement applies at once."""
        assert self._security is not None
        return self._security


def _fresh_probe() -> tuple[str, str]:
    """A new throwaway login: accepted only once mosquitto has loaded the files that contain it."""
    return _PROBE_USER, secrets.token_urlsafe(24)


def _mqtt_string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _connect_packet(username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session, a username and a password."""
    client_id = f"swarm-probe-{secrets.token_hex(4)}".encode()
    body = (
        _mqtt_string(b"MQTT")
        + bytes([4, 0b1100_0010])  # protocol level 4; username, password and clean-session flags
        + (10).to_bytes(2, "big")  # keep-alive
        + _mqtt_string(client_id)
        + _mqtt_string(username.encode())
        + _mqtt_string(password.encode())
    )
    length = bytearray()
    remaining = len(body)
    while True:  # MQTT's variable-length integer: 7 bits a byte, high bit = more follows
        byte, remaining = remaining % 128, remaining // 128
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return b"\x10" + bytes(length) + body


async def _login_accepted(host: str, port: int, tls: ssl.SSLContext, login: tuple[str, str]) -> bool:
    """Whether the broker at host:port answers CONNECT with `login` by "connection accepted"."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), timeout=1.0)
    try:
        writer.write(_connect_packet(*login))
        connack = await asyncio.wait_for(reader.readexactly(4), timeout=1.0)
        accepted = connack[0] == 0x20 and connack[3] == 0
        if accepted:
            writer.write(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
        return accepted
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _wait_for_login(
    process: asyncio.subprocess.Process,
    host: str,
    port: int,
    tls: ssl.SSLContext,
    login: tuple[str, str],
    timeout: float,
) -> bool:
    """Poll until `login` is accepted; False when the process exits or time runs out."""

    async def accepted() -> bool:
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            return await _login_accepted(host, port, tls, login)
        return False

    return await _poll(process, accepted, timeout)


async def _wait_until_accepting(
    process: asyncio.subprocess.Process, host: str, port: int, timeout: float
) -> bool:
    """Poll until the port accepts a connection; False when the process exits or time runs out."""

    async def accepting() -> bool:
        with contextlib.suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=0.5)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            # The port might belong to a process that took it in the free-port race; ours then
            # exits at once with "address in use".
            return process.returncode is None
        return False

    return await _poll(process, accepting, timeout)


async def _poll(
    process: asyncio.subprocess.Process, ready: Callable[[], Awaitable[bool]], timeout: float
) -> bool:
    """Ask `ready` with a growing pause (2 ms to 50 ms) until it says yes; False when the process exits
    or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.002
    while loop.time() < deadline:
        if process.returncode is not None:
            return False
        if await ready():
            return True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return False


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, wait a moment, then SIGKILL."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=_STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _tail(*paths: Path) -> str:
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            lines += path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty)"


def _quiet_amqtt_logging() -> None:
    """Keep amqtt's chatter out of the node's log unless the node runs at debug level.

    amqtt logs at ERROR level events that are routine for a broker, such as a client that connects
    and sends nothing (a port probe, a LAN scanner), so only its critical messages are kept. A level
    set explicitly on these loggers is left alone.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)
