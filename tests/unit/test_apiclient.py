"""`ApiClient` (and the `swarm dag` / `swarm artifact` commands on it) against the real HTTP application,
served from a background thread over an in-memory backend whose runs advance one step per poll."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from swarm.api.app import close, make_app, serve
from swarm.api.auth import ApiUser, TokenVerifier
from swarm.api.backend import Conflict, Json, NotFound
from swarm.apiclient import ApiClient, ApiError, infer_kind
from swarm.cli import main
from swarm.errors import InvalidSpec
from swarm.trust.authority import Authority

NOW = 1_000_000.0
CLUSTER = "home"

#: The states a run of each DAG goes through, one per poll: (run state, {node: state}).
SCRIPTS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "good": [
        ("QUEUED", {}),
        ("RUNNING", {"a": "RUNNING"}),
        ("RUNNING", {"a": "SUCCESS", "b": "RUNNING"}),
        ("SUCCESS", {"a": "SUCCESS", "b": "SUCCESS"}),
    ],
    "bad": [("RUNNING", {"a": "RUNNING"}), ("FAILED", {"a": "FAILED"})],
    "stuck": [("RUNNING", {"a": "RUNNING"})],
}


class FieldError(InvalidSpec):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class Backend:
    """DAGs, runs and artifacts in memory; it records what it was asked."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    dags: dict[tuple[str, str], Json] = field(default_factory=dict)
    runs: dict[str, Json] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    blobs: dict[tuple[str, str], tuple[str, str, bytes]] = field(default_factory=dict)

    async def define_dag(self, body: Json, user: ApiUser) -> Json:
        self.calls.append(("define_dag", body))
        if not isinstance(body.get("nodes"), list):
            raise FieldError("nodes: expected an array", "nodes")
        self.dags[(body["dagId"], body["version"])] = body
        valid = body["dagId"] != "invalid"
        return {
            "dagId": body["dagId"],
            "version": body["version"],
            "status": "CREATED" if valid else "INVALID",
            "validationResults": {
                "isValid": valid,
                "errors": [] if valid else [{"nodeId": "a", "message": "a cycle", "severity": "ERROR"}],
                "warnings": [],
                "suggestions": [{"nodeId": "a", "message": "split it", "action": "SPLIT"}],
            },
            "estimatedExecutionTime": "PT2M",
            "dataFlowAnalysis": {"criticalPath": ["a", "b"], "bottleneckNode": "b"},
        }

    async def list_dags(self) -> list[Json]:
        return [{"dagId": d, "latestVersion": v} for d, v in sorted(self.dags)]

    async def get_dag(self, dag_id: str, version: str | None) -> Json | None:
        found = [v for (d, v) in self.dags if d == dag_id and version in (None, v)]
        return {"dagId": dag_id, "version": max(found), "definition": {}} if found else None

    async def dag_versions(self, dag_id: str) -> list[Json]:
        return [{"version": v} for (d, v) in sorted(self.dags) if d == dag_id]

    async def start_run(self, dag_id: str, body: Json, user: ApiUser) -> Json:
        self.calls.append(("start_run", dag_id, body, user.id))
        if dag_id not in SCRIPTS:
            raise NotFound(f"no DAG {dag_id!r}")
        run_id = body.get("runId") or f"{dag_id}@1"
        self.runs[run_id] = {"runId": run_id, "dagId": dag_id, "state": "QUEUED", "nodes": []}
        self.polls[run_id] = 0
        return {"runId": run_id, "dagId": dag_id, "state": "QUEUED"}

    async def get_run(self, run_id: str) -> Json | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        script = SCRIPTS[run["dagId"]]
        state, nodes = script[min(self.polls[run_id], len(script) - 1)]
        self.polls[run_id] += 1
        steps = [
            {"nodeId": n, "shard": 0, "state": s, "attempt": 1, "device": "n-1"} for n, s in nodes.items()
        ]
        return {**run, "state": state, "nodes": steps}

    async def list_runs(self, dag_id: str | None, limit: int, state: str | None) -> list[Json]:
        self.calls.append(("list_runs", dag_id, limit, state))
        return [r for r in self.runs.values() if dag_id in (None, r["dagId"])][:limit]

    async def cancel_run(self, run_id: str, user: ApiUser) -> Json:
        self.calls.append(("cancel_run", run_id))
        return {"runId": run_id, "cancelRequested": True}

    async def modify_run(self, run_id: str, body: Json, user: ApiUser) -> Json:
        raise Conflict("not supported")

    async def allocate(self, body: Json, user: ApiUser) -> Json:
        raise Conflict("not supported")

    async def history(self, dag_id: str, limit: int) -> Json:
        return {"dagId": dag_id, "runs": [], "limit": limit}

    async def analytics(self, dag_id: str) -> Json:
        return {"dagId": dag_id, "samples": 0}

    async def list_artifacts(self) -> list[Json]:
        return [{"name": n, "version": v, "kind": k} for (n, v), (k, _, _) in sorted(self.blobs.items())]

    async def get_artifact(self, name: str, version: str | None) -> Json | None:
        found = [a for a in await self.list_artifacts() if a["name"] == name]
        if version is None:
            return {"name": name, "versions": found[::-1]} if found else None
        return next((a for a in found if a["version"] == version), None)

    async def artifact_source(self, name: str, version: str) -> tuple[str, bytes] | None:
        found = self.blobs.get((name, version))
        return None if found is None else (found[1], found[2])

    async def push_artifact(
        self, name: str, version: str, kind: str, filename: str, data: bytes, user: ApiUser
    ) -> Json:
        self.blobs[(name, version)] = (kind, filename, data)
        return {"name": name, "version": version, "kind": kind, "filename": filename, "size": len(data)}

    async def list_standards(self) -> list[Json]:
        return []

    async def define_standard(self, body: Json, user: ApiUser) -> Json:
        raise Conflict("not supported")

    async def devices(self) -> list[Json]:
        return [{"nodeId": "n-1", "state": "alive"}]

    def status(self) -> Json:
        return {"nodeId": "n-1", "epoch": 3}

    async def subscribe(self) -> AsyncIterator[Json]:
        nothing: list[Json] = []
        for event in nothing:
            yield event


@dataclass
class Served:
    url: str
    backend: Backend
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWARM_HOME", str(home))
        authority = Authority.open_or_found(CLUSTER, NOW, lambda: None)
    tokens = {r: authority.issue(f"u-{r}", "user", r, now=NOW).to_token() for r in ("viewer", "operator")}
    backend = Backend()
    verifier = TokenVerifier(authority.public_key, CLUSTER, lambda _: False, lambda: NOW)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-server", daemon=True)
    thread.start()

    async def start() -> Any:
        return await serve(make_app(backend, verifier), "127.0.0.1", 0)

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield Served(f"http://127.0.0.1:{port}", backend, tokens)
    finally:
        asyncio.run_coroutine_threadsafe(close(runner), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def client(served: Served, role: str = "operator", fake: FakeTime | None = None) -> ApiClient:
    fake = fake or FakeTime()
    return ApiClient(served.url, served.tokens[role], timeout=5, clock=fake.clock, sleep=fake.sleep)


def test_define_list_and_show_a_dag(served: Served) -> None:
    api = client(served)
    answer = api.define({"dagId": "good", "version": "1.0", "nodes": []})
    assert answer["status"] == "CREATED" and answer["validationResults"]["isValid"]
    api.define({"dagId": "good", "version": "1.1", "nodes": []})
    assert {"dagId": "good", "latestVersion": "1.1"} in api.dags()
    assert api.dag("good")["version"] == "1.1"
    assert api.dag("good", "1.0")["version"] == "1.0"
    assert [v["version"] for v in api.versions("good")] == ["1.0", "1.1"]


def test_a_refusal_is_an_api_error_with_the_servers_message_and_field(served: Served) -> None:
    api = client(served)
    with pytest.raises(ApiError) as bad:
        api.define({"dagId": "x", "version": "1.0", "nodes": "many"})
    assert (bad.value.status, bad.value.path) == (400, "nodes")
    assert "expected an array" in str(bad.value)
    with pytest.raises(ApiError) as missing:
        api.dag("nope", "2.0")
    assert missing.value.status == 404 and "no version '2.0' of DAG 'nope'" in missing.value.message
    with pytest.raises(ApiError) as unknown:
        api.run("nope")
    assert unknown.value.status == 404 and "nope" in str(unknown.value)


def test_tokens_and_roles_are_enforced(served: Served) -> None:
    forged = ApiClient(served.url, "swarm1:not-a-token", timeout=5)
    with pytest.raises(ApiError) as unauthenticated:
        forged.dags()
    assert unauthenticated.value.status == 401
    with pytest.raises(ApiError) as forbidden:
        client(served, "viewer").run("good")
    assert forbidden.value.status == 403 and "submit" in str(forbidden.value)


def test_run_and_wait_reports_each_change_and_returns_the_final_run(served: Served) -> None:
    api = client(served)
    started = api.run("good", params={"n": 3}, version="1.0", run_id="good@2024-01-01T00:00:00Z")
    assert started["runId"] == "good@2024-01-01T00:00:00Z"
    assert served.backend.calls[-1] == (
        "start_run",
        "good",
        {"params": {"n": 3}, "version": "1.0", "runId": "good@2024-01-01T00:00:00Z"},
        "u-operator",
    )
    seen: list[tuple[str, list[str]]] = []
    final = api.wait(
        started["runId"], on_change=lambda r: seen.append((r["state"], [n["state"] for n in r["nodes"]]))
    )
    assert final["state"] == "SUCCESS"
    assert seen == [
        ("QUEUED", []),
        ("RUNNING", ["RUNNING"]),
        ("RUNNING", ["SUCCESS", "RUNNING"]),
        ("SUCCESS", ["SUCCESS", "SUCCESS"]),
    ]


def test_wait_gives_up_after_its_timeout_and_on_an_unknown_run(served: Served) -> None:
    fake = FakeTime()
    api = client(served, fake=fake)
    run_id = api.run("stuck")["runId"]
    with pytest.raises(TimeoutError, match="did not finish within 3 s"):
        api.wait(run_id, timeout=3, poll=0.5)
    assert fake.now == pytest.approx(3.0)
    with pytest.raises(ApiError) as unknown:
        api.wait("never-started", poll=1.0)
    assert unknown.value.status == 404 and fake.now > 5


def test_runs_are_listed_with_their_filters_and_cancelled(served: Served) -> None:
    api = client(served)
    api.run("bad", run_id="bad-1")
    assert api.wait("bad-1")["state"] == "FAILED"
    assert [r["runId"] for r in api.runs("bad", state="FAILED", limit=5)] == ["bad-1"]
    assert served.backend.calls[-1] == ("list_runs", "bad", 5, "FAILED")
    assert api.cancel("bad-1")["cancelRequested"] is True


def test_artifacts_push_files_and_directories_with_inferred_kinds(served: Served, tmp_path: Path) -> None:
    api = client(served)
    script = tmp_path / "steps.py"
    script.write_text("def f():\n    return {}\n")
    meta = api.push_artifact(script, "steps", "1.0")
    assert (meta["kind"], meta["filename"], meta["size"]) == ("python", "steps.py", script.stat().st_size)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "main.py").write_text("x = 1\n")
    assert api.push_artifact(package, "pkg", "2.0")["filename"] == "pkg.zip"
    assert served.backend.blobs[("pkg", "2.0")][2][:2] == b"PK"
    assert api.artifact_source("steps", "1.0") == script.read_bytes()
    assert [a["version"] for a in api.artifact("steps")["versions"]] == ["1.0"]
    assert {(a["name"], a["kind"]) for a in api.artifacts()} >= {("steps", "python"), ("pkg", "python")}
    assert infer_kind(tmp_path / "run.sh") == "shell" and infer_kind(tmp_path / "app.jar") == "jar"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    with pytest.raises(InvalidSpec, match="cannot tell the artifact kind"):
        api.push_artifact(notes, "notes", "1.0")
    assert api.push_artifact(notes, "notes", "1.0", kind="shell")["kind"] == "shell"
    with pytest.raises(InvalidSpec, match="no such file"):
        api.push_artifact(tmp_path / "missing.py", "x", "1.0")


def test_a_node_that_does_not_answer_is_a_clear_error(served: Served) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = ApiClient(f"http://127.0.0.1:{port}", "t", timeout=2)
    with pytest.raises(ApiError) as refused:
        api.status()
    assert refused.value.status == 0
    assert f"127.0.0.1:{port}" in str(refused.value) and "swarm status" in str(refused.value)
    with pytest.raises(InvalidSpec, match="expected http://host:port"):
        ApiClient("localhost:8080", "t")


def test_the_cluster_views(served: Served) -> None:
    api = client(served, "viewer")
    assert api.devices() == [{"nodeId": "n-1", "state": "alive"}]
    assert api.status()["epoch"] == 3
    assert api.history("good", limit=3)["limit"] == 3
    assert api.analytics("good")["dagId"] == "good"


# --- the CLI, in process --------------------------------------------------------------------------


def cli(served: Served, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--api", served.url, "--token", served.tokens["operator"], "--cluster", CLUSTER])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_define_prints_the_analysis_and_exits_1_when_invalid(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "dagId: good\nversion: '3.0'\nnodes:\n  - nodeId: a\n    type: EXTRACT\n    taskDefinition:\n"
        "      runtime: SWARM\n      entrypoint: echo\n"
    )
    code, out, err = cli(served, capsys, "dag", "define", str(good))
    assert code == 0, err
    assert "good 3.0: CREATED" in out and "critical path:  a -> b" in out and "estimated time: PT2M" in out
    invalid = tmp_path / "invalid.json"
    definition = yaml.safe_load(good.read_text())
    invalid.write_text(orjson.dumps({**definition, "dagId": "invalid"}).decode())
    code, out, _ = cli(served, capsys, "dag", "define", str(invalid), "--json")
    assert code == 1 and orjson.loads(out)["validationResults"]["errors"][0]["message"] == "a cycle"


def test_cli_bad_files_and_params_are_usage_errors(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"dagId": "x", "version": "1.0", "nodes": [{"nodeId": 7}]}')
    code, out, err = cli(served, capsys, "dag", "define", str(bad))
    assert code == 2 and out == "" and "nodes[0].nodeId" in err and err.count("\n") == 1
    code, _, err = cli(served, capsys, "dag", "define", str(tmp_path / "x.txt"))
    assert code == 2 and ".json, .yaml or .yml" in err
    code, _, err = cli(served, capsys, "dag", "run", "good", "--param", "novalue")
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = cli(served, capsys, "dag", "run", "nope")
    assert code == 1 and "no DAG 'nope'" in err and "Traceback" not in err


def test_cli_run_wait_prints_progress_then_the_run(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        served,
        capsys,
        "dag",
        "run",
        "good",
        "--param",
        "n=3",
        "--param",
        "who=me",
        "--run-id",
        "cli-1",
        "--wait",
    )
    assert code == 0, err
    assert served.backend.calls[-1][2]["params"] == {"n": 3, "who": "me"}
    assert orjson.loads(out)["state"] == "SUCCESS"
    assert "run cli-1 SUCCESS" in err and "a#0 SUCCESS on n-1" in err
    code, out, _ = cli(served, capsys, "dag", "run", "bad", "--run-id", "cli-2", "--wait")
    assert code == 1 and orjson.loads(out)["state"] == "FAILED"
    code, out, _ = cli(served, capsys, "dag", "status", "cli-2")
    assert code == 0 and "cli-2" in out and "FAILED" in out


def test_cli_artifacts(served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("echo hi\n")
    code, out, err = cli(served, capsys, "artifact", "push", str(script), "--name", "job", "--version", "1.0")
    assert code == 0 and "job" in out and "shell" in out, err
    code, out, _ = cli(served, capsys, "artifact", "show", "job", "--source")
    assert code == 0 and out == "echo hi\n"
    code, out, _ = cli(served, capsys, "artifact", "show", "job@1.0")
    assert code == 0 and orjson.loads(out)["kind"] == "shell"
    code, _, err = cli(served, capsys, "artifact", "show", "nothing@1.0")
    assert code == 1 and "nothing" in err
