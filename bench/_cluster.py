"""What the benchmarks share: a real swarm cluster on loopback, process clean-up, CPU accounting.

`SwarmCluster` starts a mosquitto on a free loopback port (configured by `swarm.runtime.brokerconf`,
like the tests) and `swarm join` nodes against it, each a separate process with its own data directory
and log under the given root; leaving the `with` block stops them (a clean leave, then SIGKILL) and
the broker. The broker is secured as users get it by default: a password file, an ACL that lets the
benchmark's one login do anything under `swarm/`, and TLS with a throwaway CA; the nodes and every
command take that login from the environment, as nodes of a user-run broker do. The first node founds
the cluster's authority under the root, so this process and the commands act as the owner's admin.
For measuring what security costs, `tls=False` serves plain TCP (still with passwords and the ACL)
and `signed=False` turns Ed25519 signatures off in every process of the cluster.

`scratch_dir()` is the temporary root a benchmark works in, removed at the end whatever happens;
`sigterm_as_interrupt()` turns a SIGTERM into the KeyboardInterrupt that triggers that clean-up.
Everything listens on 127.0.0.1 only.

For the MapReduce benchmarks, `run_mapreduce()` runs one job exactly as a user would (`python -m
swarm.cli submit mapreduce ...`, timed from start to exit), then reads the job's committed task
updates back from the broker (every map's records/bytes_in/runs, every reduce's shuffled/bytes, and
each task's start and end), and `phase_report()` turns them into where the time went. With a profile
directory it also samples the submitter, both nodes and their executor workers with py-spy
(`top_frames()` summarises what it saw).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psutil

from swarm import eventloop
from swarm.client import Client
from swarm.codec import DEFAULT_MAX_BYTES
from swarm.eventloop import LOOP_ENV
from swarm.ids import new_job_id
from swarm.messages import Commit, TaskUpdate
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
from swarm.runtime.client import SwarmClient
from swarm.runtime.mqtt import BrokerLogin, Transport
from swarm.trust.authority import Authority
from swarm.trust.credentials import Credential
from swarm.trust.signing import UNSIGNED_ENV, Verifier
from swarm.trust.tls import make_ca, make_server_cert

__all__ = [
    "CLUSTER",
    "HOST",
    "READY_TIMEOUT",
    "MapReduceRun",
    "SwarmCluster",
    "cpu_seconds",
    "parse_size",
    "phase_report",
    "profile_report",
    "run_mapreduce",
    "say",
    "scratch_dir",
    "sigterm_as_interrupt",
    "size_label",
    "start_profilers",
    "stop_process",
    "stop_profilers",
    "top_frames",
]

CLUSTER = "bench"
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
BENCH_USER = "swarm-bench"
_LOGIN_ENV = ("SWARM_BROKER_USERNAME", "SWARM_BROKER_PASSWORD", "SWARM_BROKER_CA")
_R = TypeVar("_R")
# The lines of `mosquitto_config` that make its listener TLS; a plain-TCP broker is that config without
# them, so that it keeps every other setting (passwords, ACL, queues) of the secured one.
_TLS_KEYS = ("cafile", "certfile", "keyfile", "tls_version")


def dask_local_cluster() -> Any:
    """The Dask peer every benchmark measures: a LocalCluster of 2 worker processes with 1 thread each,
    on loopback, quiet. Raises ImportError when Dask is not installed."""
    from dask.distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host=HOST,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


def say(text: str) -> None:
    """Print at once (the benchmarks run for minutes; progress should show as it happens)."""
    print(text, flush=True)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM (a clean leave), then SIGKILL; whatever it started dies with it."""
    if proc.poll() is not None:
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(descendants, timeout=5)


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds spent so far by each group of processes (gone ones count 0)."""
    out: dict[str, float] = {}
    for name, procs in groups.items():
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        out[name] = total
    return out


def parse_size(text: str) -> int:
    """'256M', '1G', '64K' or a plain byte count (K/M/G are powers of 1024, as in `swarm`)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    try:
        if text[-1:].upper() in units:
            return int(float(text[:-1]) * units[text[-1].upper()])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256M, 1G)") from None


def size_label(nbytes: int) -> str:
    """256M, 1G, ... for table headings."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed with everything in it when the block ends."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in this process, so that the clean-up runs as after Ctrl-C."""
    owner = os.getpid()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked pool worker inherited this handler: just die
            os._exit(128 + signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _plain_config(conf: str) -> str:
    """A mosquitto config of `mosquitto_config(..., security=...)` with its listener's TLS taken out."""
    lines = conf.splitlines(keepends=True)
    kept = [line for line in lines if line.split(" ", 1)[0] not in _TLS_KEYS]
    if len(lines) - len(kept) != len(_TLS_KEYS):  # brokerconf changed: do not measure something else
        raise RuntimeError(f"expected the TLS settings {_TLS_KEYS} in the mosquitto config:\n{conf}")
    return "".join(kept)


class SwarmCluster:
    """A secured mosquitto on a free loopback port and `swarm join` worker nodes against it.

    `tls=False` makes the listener plain TCP (with the same passwords and ACL) and `signed=False` turns
    message signatures off in every process of the cluster; both exist only to measure their cost.
    """

    def __init__(
        self,
        root: Path,
        slots: int,
        nodes: int = 2,
        allowed_paths: Sequence[Path] = (),
        *,
        tls: bool = True,
        signed: bool = True,
        loop: str = "uvloop",
        memory_limit_mb: int | None = None,
    ) -> None:
        self.root = root
        self.allowed_paths = tuple(allowed_paths)
        self.memory_limit_mb = memory_limit_mb  # per task, in the nodes' config (None: the default)
        self.slots = slots
        self.node_count = nodes
        self.tls = tls
        self.signed = signed
        self.url = ""
        self.port = 0
        self.broker: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.coordinator_name = ""
        self._password = secrets.token_urlsafe(16)
        self._ca_pem: bytes | None = None
        self._authority: Authority | None = None
        self.env = dict(os.environ)
        self.env.update(
            SWARM_MDNS_INTERFACES=HOST,
            SWARM_BROKER_LISTEN=HOST,
            SWARM_DATA_LISTEN=HOST,
            SWARM_DATA_HOST=HOST,
            SWARM_HOME=str(root / "home"),
            PYTHONUNBUFFERED="1",
        )
        for key in (
            "SWARM_BROKER",
            "SWARM_CLUSTER",
            "SWARM_CONFIG",
            "SWARM_TOKEN",
            UNSIGNED_ENV,
            *_LOGIN_ENV,
        ):
            self.env.pop(key, None)
        # Nodes and commands log in as nodes of a user-run broker do; the CA only when it serves TLS
        # (a login with a CA makes the client speak TLS whatever the URL says).
        self.env.update(SWARM_BROKER_USERNAME=BENCH_USER, SWARM_BROKER_PASSWORD=self._password)
        if tls:
            self.env["SWARM_BROKER_CA"] = str(root / "broker" / "ca.pem")
        if not signed:  # every process must agree: a signing node refuses every unsigned frame
            self.env[UNSIGNED_ENV] = "1"
        self.loop = loop
        self.env.pop(LOOP_ENV, None)
        if loop == "asyncio":  # the nodes run on asyncio's own loop instead of uvloop
            self.env[LOOP_ENV] = "asyncio"
        # The timed `swarm submit` is a fresh interpreter each run: let it cache its bytecode as an
        # installed package does (pip compiles it at install), instead of compiling ~30 modules per run.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def __enter__(self) -> SwarmCluster:
        try:
            self._open_allowed_paths()
            self._start_broker()
            for i in range(1, self.node_count + 1):
                self._start_node(f"w{i}")
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_allowed_paths(self) -> None:
        """Let the task user through the allowed paths, as their owner must: a node running as root runs
        task code as an unprivileged user, and these are private temporary directories (mode 0700)."""
        if not self.allowed_paths or os.geteuid() != 0:
            return
        for path in self.allowed_paths:
            path.chmod(path.stat().st_mode | 0o711)  # what is inside is readable already (umask 022)

    def _write_security(self) -> MosquittoFiles:
        """The broker's password file, ACL and TLS material (a fresh CA), like the tests' broker."""
        directory = self.root / "broker"
        directory.mkdir(parents=True, exist_ok=True)
        ca_pem, ca_key = make_ca(CLUSTER)
        cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
        files = MosquittoFiles.under(directory)
        # One login for nodes and clients alike (not `mosquitto_acl`, which is per principal): what a
        # principal may send is still checked by every receiver against its signed certificate.
        files.password_file.write_text(mosquitto_passwords({BENCH_USER: UserEntry(self._password, "user")}))
        # Reading the broker's publish counters lets `tasks.py` count deliveries (what receivers check).
        files.acl_file.write_text(
            f"user {BENCH_USER}\ntopic readwrite swarm/#\ntopic read $SYS/broker/publish/#\n"
        )
        files.cafile.write_bytes(ca_pem)
        files.certfile.write_bytes(cert_pem)
        files.keyfile.write_bytes(key_pem)
        files.keyfile.chmod(0o600)
        self._ca_pem = ca_pem if self.tls else None
        return files

    def _start_broker(self) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        files = self._write_security()
        for _ in range(5):  # free_port() releases the port: another process may take it first
            port = free_port(HOST)
            conf = self.root / "mosquitto.conf"
            text = mosquitto_config(port, HOST, self.root / "mosquitto.log", security=files)
            # Its counters every second instead of every 10 s, so that a count brackets a short run.
            text += "sys_interval 1\n"
            conf.write_text(text if self.tls else _plain_config(text))
            proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and proc.poll() is None:
                if port_accepts(HOST, port):
                    self.broker = proc
                    self.port = port
                    self.url = url_for(HOST, port, tls=self.tls)
                    return
                time.sleep(0.005)
            stop_process(proc)
        raise RuntimeError("mosquitto did not start; see its log")

    def _start_node(self, name: str) -> None:
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self.command("join", "--name", name, "--data-dir", str(data_dir)),
            *("--slots", str(self.slots), "--no-embedded-broker"),
        ]
        tasks = []
        if self.allowed_paths:  # the owner opens these to tasks, so maps here read their inputs directly
            paths = json.dumps([str(p) for p in self.allowed_paths])  # a JSON list of strings is TOML too
            tasks.append(f"allowed_paths = {paths}")
        if self.memory_limit_mb is not None:
            tasks.append(f"memory_limit_mb = {self.memory_limit_mb}")
        if tasks:
            config = self.root / "node.toml"
            config.write_text("[tasks]\n" + "\n".join(tasks) + "\n")
            cmd += ["--config", str(config)]
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env, start_new_session=True)
        self.nodes.append(proc)
        self.names.append(name)

    def login(self) -> BrokerLogin:
        """The broker login of this process's connections (the one the nodes have from the env)."""
        return BrokerLogin(BENCH_USER, self._password, self._ca_pem)

    def admin_credential(self) -> Credential:
        """The owner's admin credential, from the authority the first node founded under the root."""
        if self._authority is None:
            self._authority = Authority.load(CLUSTER, home=self.root / "home")
        return self._authority.admin_credential()

    @contextlib.contextmanager
    def signing_env(self) -> Iterator[None]:
        """This process signs and checks signatures as the cluster's nodes do while the block runs.

        `Signer` and `Verifier` read the switch when they are made: make them inside the block.
        """
        previous = os.environ.get(UNSIGNED_ENV)
        if self.signed:
            os.environ.pop(UNSIGNED_ENV, None)
        else:
            os.environ[UNSIGNED_ENV] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(UNSIGNED_ENV, None)
            else:
                os.environ[UNSIGNED_ENV] = previous

    def client(self) -> SwarmClient:
        """A `SwarmClient` (not entered) acting as the cluster's admin, signing as the nodes do."""
        with self.signing_env():
            return SwarmClient(
                self.url, self.admin_credential(), login=self.login(), max_bytes=DEFAULT_MAX_BYTES
            )

    @contextlib.contextmanager
    def python_client(self) -> Iterator[Client]:
        """A connected `swarm.Client`, found and logged in as the CLI is: from this cluster's environment."""
        names = {k for k in (*self.env, *os.environ) if k.startswith("SWARM_")}
        saved = {k: os.environ.get(k) for k in names}
        for key in names:
            if key in self.env:
                os.environ[key] = self.env[key]
            else:
                os.environ.pop(key, None)
        try:
            client = Client(cluster=CLUSTER, broker=self.url).__enter__()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            yield client
        finally:
            client.__exit__(None, None, None)

    def verifier(self) -> Verifier:
        """Checks the cluster's messages against its authority, as the nodes do."""
        with self.signing_env():
            return Verifier(CLUSTER, self.admin_credential().authority_public, max_bytes=DEFAULT_MAX_BYTES)

    def command(self, command: str, *args: str) -> list[str]:
        """The argv of `python -m swarm.cli COMMAND ARGS...` against this cluster's broker."""
        return [sys.executable, "-m", "swarm.cli", command, *args, "--broker", self.url, "--cluster", CLUSTER]

    def status(self) -> dict[str, Any]:
        """`swarm status --json`, parsed (empty when the command failed or, on a saturated machine,
        did not answer within 30 s)."""
        try:
            out = subprocess.run(
                self.command("status", "--json"),
                capture_output=True,
                text=True,
                timeout=30,
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {}
        if out.returncode != 0:
            return {}
        parsed: dict[str, Any] = json.loads(out.stdout)
        return parsed

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for proc in self.nodes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a swarm node exited with {proc.returncode}:\n{self.logs()}")
            status = self.status()
            alive = [n for n in status.get("nodes", []) if n["state"] == "alive"]
            if status.get("coordinator") and len(alive) >= self.node_count:
                by_id = {n["id"]: n["name"] for n in status["nodes"]}
                self.coordinator_name = by_id.get(status["coordinator"], "")
                return
            time.sleep(0.2)
        raise RuntimeError(f"swarm cluster not ready after {READY_TIMEOUT:.0f}s: {status}\n{self.logs()}")

    def process_groups(self) -> dict[str, list[psutil.Process]]:
        """The cluster's processes by role: the broker, each node, each node's executor workers."""
        groups: dict[str, list[psutil.Process]] = {}
        with contextlib.suppress(psutil.Error):
            if self.broker is not None:
                groups["mosquitto"] = [psutil.Process(self.broker.pid)]
            for name, proc in zip(self.names, self.nodes, strict=True):
                node = psutil.Process(proc.pid)
                role = " (coordinator)" if name == self.coordinator_name else ""
                groups[f"{name} node{role}"] = [node]
                groups[f"{name} executor"] = node.children(recursive=True)
        return groups

    def run(self, main: Coroutine[Any, Any, _R]) -> _R:
        """Run `main` in this process on the loop the cluster's nodes run, as `swarm` commands would."""
        return eventloop.run(main) if self.loop == "uvloop" else asyncio.run(main)

    def logs(self) -> str:
        """The tail of every node's log."""
        parts = []
        for log in sorted(self.root.glob("w*.log")):
            parts.append(f"--- {log.stem}\n{log.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stop the nodes (a clean leave), then the broker."""
        for proc in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.nodes:
            stop_process(proc)
        self.nodes.clear()
        if self.broker is not None:
            stop_process(self.broker)
            self.broker = None


# --- MapReduce jobs through the CLI ----------------------------------------------------------------------


@dataclass
class MapReduceRun:
    """One MapReduce job, run by the CLI or the Python client: wall time, the job's summary (its id, how
    many maps and reduces ran), and what the job committed."""

    seconds: float
    summary: dict[str, Any]
    updates: list[TaskUpdate]
    submitted: float  # time.time() just before the CLI started (or the client's call began)
    exited: float  # time.time() when it had exited (or the call returned)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group during the run
    profiles: dict[str, Path] = field(default_factory=dict)  # py-spy raw output per process


def run_mapreduce(
    cluster: SwarmCluster,
    app: str,
    inputs: Sequence[Path],
    output: Path,
    reduces: int,
    split_size: str | None = None,
    profile_dir: Path | None = None,
    timeout: float = 3600.0,
    client: Client | None = None,
) -> MapReduceRun:
    """Run one MapReduce job through the CLI, or through `client` (a `swarm.Client` connected before the
    clock, as a program using swarm holds one) when given, and collect its record; RuntimeError if it
    failed. A profile samples the CLI's process; with a client, only the cluster's."""
    if cluster.allowed_paths and os.geteuid() == 0:
        # Made here rather than by the command, so that the task user (not root) may write the outputs
        # in place, as the benchmarks describe; otherwise they would be uploaded to the submitter.
        output.mkdir(parents=True, exist_ok=True)
        output.chmod(0o777)
    groups = cluster.process_groups()
    before = cpu_seconds(groups)
    if client is None:
        job_id = new_job_id()
        args = ["mapreduce", "--app", app, "--input", *map(str, inputs), "--reduces", str(reduces)]
        args += ["--output", str(output), "--job-id", job_id]
        if split_size:
            args += ["--split-size", split_size]
        job = _job_by_cli(cluster, args, profile_dir, timeout, groups)
        job.summary["job_id"] = job_id
    else:
        options: dict[str, Any] = {"split_size": parse_size(split_size)} if split_size else {}
        job = _job_by_client(
            lambda: client.mapreduce(app, inputs, reduces, output, **options), profile_dir, groups
        )
    after = cpu_seconds(groups)
    job.cpu.update({name: after[name] - before.get(name, 0.0) for name in after})
    total = int(job.summary["maps"]) + int(job.summary["reduces"])
    job.updates = asyncio.run(_job_record(cluster, job.summary["job_id"], total))
    return job


def _job_by_cli(
    cluster: SwarmCluster,
    args: list[str],
    profile_dir: Path | None,
    timeout: float,
    groups: dict[str, list[psutil.Process]],
) -> MapReduceRun:
    """`swarm submit ARGS...`, timed from the command's start to its exit."""
    children_before = _children_cpu()
    submitted = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cluster.command("submit", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        start_new_session=True,
    )
    recorders: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        if profile_dir is not None:
            targets = {"submitter": [psutil.Process(proc.pid)], **groups}
            recorders = start_profilers(targets, profile_dir)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise RuntimeError(f"swarm mapreduce did not finish within {timeout:.0f}s") from None
        seconds = time.perf_counter() - t0
        exited = time.time()
    finally:
        profiles = stop_profilers(recorders)
        if proc.poll() is None:
            stop_process(proc)
    if proc.returncode != 0:
        raise RuntimeError(
            f"swarm mapreduce exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
        )
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    cpu = {"submitter (CLI)": _children_cpu() - children_before}
    return MapReduceRun(seconds, summary, [], submitted, exited, cpu, profiles)


def _job_by_client(
    call: Callable[[], dict[str, Any]], profile_dir: Path | None, groups: dict[str, list[psutil.Process]]
) -> MapReduceRun:
    """The client's `mapreduce` call, timed from the call to its return."""
    own_before = time.process_time()
    submitted = time.time()
    t0 = time.perf_counter()
    recorders = start_profilers(groups, profile_dir) if profile_dir is not None else {}
    try:
        summary = call()
        seconds = time.perf_counter() - t0
        exited = time.time()
    finally:
        profiles = stop_profilers(recorders)
    cpu = {"submitter (client)": time.process_time() - own_before}
    return MapReduceRun(seconds, summary, [], submitted, exited, cpu, profiles)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _job_record(
    cluster: SwarmCluster, job_id: str, total: int, timeout: float = 30.0
) -> list[TaskUpdate]:
    """The job's committed task updates, read back from the chunks retained on the broker."""
    updates: dict[str, TaskUpdate] = {}
    verifier = cluster.verifier()
    login = cluster.login()
    async with Transport(cluster.url, CLUSTER, f"bench-{job_id}", login=login, persistent=False) as transport:
        await transport.subscribe(f"job/{job_id}/commits/+")

        async def collect() -> None:
            async for topic, payload, retained in transport.messages():
                if not payload:
                    continue
                body = verifier.open(topic, payload, retained=retained, now=time.time()).envelope.body
                if isinstance(body, Commit):
                    for update in body.updates:
                        updates.setdefault(update.task_id, update)
                if len(updates) >= total:
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), timeout)
    return sorted(updates.values(), key=lambda u: u.started_at)


def phase_report(run: MapReduceRun, slots: int) -> list[str]:
    """Where the job's wall time went, from the task updates: lines ready to print."""
    maps = [u for u in run.updates if u.task_id.rpartition(".")[2].startswith("m")]
    reduces = [u for u in run.updates if u.task_id.rpartition(".")[2].startswith("r")]
    if not maps or not reduces:
        return [f"job record incomplete: {len(maps)} maps, {len(reduces)} reduces read back"]
    t0 = run.submitted
    first_map = min(u.started_at for u in maps)
    last_map = max(u.finished_at for u in maps)
    first_reduce = min(u.started_at for u in reduces)
    last_reduce = max(u.finished_at for u in reduces)
    map_busy = sum(u.finished_at - u.started_at for u in maps)
    reduce_busy = sum(u.finished_at - u.started_at for u in reduces)
    bytes_in = sum(int((u.result or {}).get("bytes_in", 0)) for u in maps)
    records = sum(int((u.result or {}).get("records", 0)) for u in maps)
    run_bytes = sum(r["bytes"] for u in maps for r in (u.result or {}).get("runs", []))
    shuffled = sum(int((u.result or {}).get("shuffled", 0)) for u in reduces)
    out_bytes = sum(int((u.result or {}).get("bytes", 0)) for u in reduces)
    durations = sorted(u.finished_at - u.started_at for u in maps)
    nodes = collections.Counter(u.node for u in run.updates)
    lines = [
        f"submit -> first map starts     {first_map - t0:7.2f} s  (CLI start, checks, planning, dispatch)",
        f"map phase                       {last_map - first_map:7.2f} s  ({len(maps)} maps, "
        f"{map_busy:.1f} task-s = {map_busy / max(last_map - first_map, 1e-9) / slots:.0%} of {slots} slots; "
        f"per map {durations[0]:.2f}-{durations[-1]:.2f} s, median {durations[len(durations) // 2]:.2f} s)",
        f"  map rate                      {bytes_in / map_busy / 1e6:7.1f} MB/s per busy slot "
        f"({bytes_in / 1e6:.0f} MB in, {records:,} records out, {run_bytes / 1e6:.1f} MB of runs)",
        f"last map -> first reduce starts {first_reduce - last_map:7.2f} s",
        f"reduce phase                    {last_reduce - first_reduce:7.2f} s  ({len(reduces)} reduces, "
        f"{reduce_busy:.1f} task-s; shuffled {shuffled / 1e6:.1f} MB, wrote {out_bytes / 1e6:.1f} MB)",
        f"last reduce -> submit returns  {run.exited - last_reduce:7.2f} s",
        f"tasks per node: {', '.join(f'{n}: {c}' for n, c in sorted(nodes.items(), key=str))}",
    ]
    if run.cpu:
        total = sum(run.cpu.values())
        parts = ", ".join(f"{name} {secs:.1f}" for name, secs in run.cpu.items())
        cores = os.cpu_count() or 1
        lines.append(
            f"CPU s: {parts}; total {total:.1f} = {total / (run.seconds * cores):.0%} of {cores} cores"
        )
    return lines


# --- profiling ------------------------------------------------------------------------------------------


def start_profilers(
    groups: dict[str, list[psutil.Process]], directory: Path
) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """A `py-spy record` per process that can run Python work: the executors' forkserver (the parent
    of the workers, idle) and multiprocessing's resource tracker are left out, and so is mosquitto."""
    binary = shutil.which("py-spy")
    if binary is None:
        say("  py-spy is not installed: no profile (pip install py-spy)")
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    recorders = {}
    for group, procs in groups.items():
        if group == "mosquitto":
            continue
        for proc in procs:
            try:
                idle = bool(proc.children()) if "executor" in group else False
                idle = idle or "resource_tracker" in " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if idle:
                continue
            label = f"{group} pid {proc.pid}"
            path = directory / f"{group.split()[0]}-{proc.pid}.txt"
            cmd = [binary, "record", "--pid", str(proc.pid), "--rate", "100", "--format", "raw"]
            cmd += ["--output", str(path), "--nonblocking"]
            recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            recorders[label] = (recorder, path)
    return recorders


def stop_profilers(recorders: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> dict[str, Path]:
    """SIGINT makes py-spy write what it sampled; returns the files that were written."""
    for recorder, _ in recorders.values():
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)
    written = {}
    for label, (recorder, path) in recorders.items():
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
        if path.exists() and path.stat().st_size:
            written[label] = path
    return written


def profile_report(run: MapReduceRun) -> list[str]:
    """The py-spy summary of a profiled run: lines ready to print, one block per busy process."""
    lines = [f"profiled run (py-spy at 100 Hz; not the timed run): {run.seconds:.1f} s"]
    for label, path in run.profiles.items():
        samples, rows = top_frames(path)
        if samples < 20:
            continue
        lines.append(f"{label}: {samples} samples ({samples / 100:.1f} s on CPU)")
        lines += [f"  {share:6.1%} self {incl:6.1%} incl  {name}" for name, share, incl in rows]
    return lines


def top_frames(path: Path, limit: int = 12) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function (file), self share, inclusive share)]) of a py-spy raw profile.

    Functions are merged over their lines; 'self' is time with the function on top of the Python stack
    (numpy calls count for the Python function that made them), 'inclusive' is time with it anywhere on
    the stack. Sorted by self time.
    """
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f.strip()]
        total += count
        if not frames:
            continue
        self_counts[frames[-1]] += count
        for name in set(frames):
            incl_counts[name] += count
    rows = [(name, n / total, incl_counts[name] / total) for name, n in self_counts.most_common(limit)]
    return total, rows


def _function(frame: str) -> str:
    """'run (swarm/mapreduce/tasks.py:123)' -> 'swarm/mapreduce/tasks.py:run'."""
    name, _, where = frame.strip().partition(" (")
    file = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{file}:{name}"
