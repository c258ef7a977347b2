"""The HTTP application against an in-memory backend: routes, auth, errors, limits, the stream, OpenAPI."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from swarm.api.app import ROUTES, close, make_app, serve
from swarm.api.auth import ApiUser, TokenVerifier
from swarm.api.backend import Conflict, Forbidden, Json, NotFound
from swarm.api.openapi import build_openapi
from swarm.api.stream import pump
from swarm.errors import InvalidSpec
from swarm.trust.authority import Authority

NOW = 1_000_000.0
Tokens = dict[str, str]


class FieldError(InvalidSpec):
    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class FakeBackend:
    """Remembers what it was asked; refuses on cue."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    events: list[Json] = field(default_factory=list)
    end_stream: bool = False
    subscriptions_closed: int = 0
    subscriptions_opened: int = 0
    raise_next: Exception | None = None
    live: asyncio.Queue[Json] = field(default_factory=asyncio.Queue)

    def _called(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc

    async def define_dag(self, body: Json, user: ApiUser) -> Json:
        self._called("define_dag", body, user.id)
        if body.get("nodes") == "bad":
            raise FieldError("nodes: expected an array", "nodes")
        return {"dagId": body.get("dagId"), "status": "CREATED", "createdBy": user.id}

    async def list_dags(self) -> list[Json]:
        self._called("list_dags")
        return [{"dagId": "sales"}]

    async def get_dag(self, dag_id: str, version: str | None) -> Json | None:
        self._called("get_dag", dag_id, version)
        return {"dagId": dag_id, "version": version or "1"} if dag_id == "sales" else None

    async def dag_versions(self, dag_id: str) -> list[Json]:
        self._called("dag_versions", dag_id)
        if dag_id != "sales":
            raise NotFound(f"no DAG {dag_id!r}", "dagId")
        return [{"version": "1"}]

    async def start_run(self, dag_id: str, body: Json, user: ApiUser) -> Json:
        self._called("start_run", dag_id, body, user.id)
        return {"runId": body.get("runId", "r-1"), "dagId": dag_id, "status": "QUEUED"}

    async def get_run(self, run_id: str) -> Json | None:
        self._called("get_run", run_id)
        return {"runId": run_id, "status": "RUNNING"} if run_id == "r-1" else None

    async def list_runs(self, dag_id: str | None, limit: int, state: str | None) -> list[Json]:
        self._called("list_runs", dag_id, limit, state)
        return [{"runId": "r-1"}]

    async def cancel_run(self, run_id: str, user: ApiUser) -> Json:
        self._called("cancel_run", run_id, user.id)
        return {"runId": run_id, "status": "CANCELLED"}

    async def modify_run(self, run_id: str, body: Json, user: ApiUser) -> Json:
        self._called("modify_run", run_id, body)
        return {"runId": run_id}

    async def allocate(self, body: Json, user: ApiUser) -> Json:
        self._called("allocate", body)
        return {"allocationId": body.get("allocationId"), "status": "ALLOCATED"}

    async def history(self, dag_id: str, limit: int) -> Json:
        self._called("history", dag_id, limit)
        return {"executions": [], "totalEntries": 0}

    async def analytics(self, dag_id: str) -> Json:
        self._called("analytics", dag_id)
        return {"dagId": dag_id}

    async def list_artifacts(self) -> list[Json]:
        self._called("list_artifacts")
        return []

    async def get_artifact(self, name: str, version: str | None) -> Json | None:
        self._called("get_artifact", name, version)
        return {"name": name, "version": version} if name == "etl" else None

    async def artifact_source(self, name: str, version: str) -> tuple[str, bytes] | None:
        self._called("artifact_source", name, version)
        if name == "etl":
            return "etl.py", b"<script>alert(1)</script>\nprint('hi')\n"
        return ("lib.jar", b"PK\x03\x04\xff\xfe") if name == "lib" else None

    async def push_artifact(
        self, name: str, version: str, kind: str, filename: str, data: bytes, user: ApiUser
    ) -> Json:
        self._called("push_artifact", name, version, kind, filename, len(data), user.id)
        return {"name": name, "version": version, "size": len(data)}

    async def list_standards(self) -> list[Json]:
        self._called("list_standards")
        return [{"name": "std"}]

    async def define_standard(self, body: Json, user: ApiUser) -> Json:
        self._called("define_standard", body)
        return body

    async def devices(self) -> list[Json]:
        self._called("devices")
        return [{"nodeId": "n-1"}]

    def status(self) -> Json:
        self._called("status")
        return {"nodeId": "n-1", "epoch": 3}

    async def subscribe(self) -> AsyncIterator[Json]:
        self.subscriptions_opened += 1
        try:
            for event in self.events:
                yield event
            while not self.end_stream:
                yield await self.live.get()
        finally:
            self.subscriptions_closed += 1


@dataclass
class Env:
    authority: Authority
    tokens: Tokens
    revoked: set[str]
    clock: list[float]

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(
            self.authority.public_key, "home", self.revoked.__contains__, lambda: self.clock[0]
        )


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Tokens]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWARM_HOME", str(tmp_path_factory.mktemp("home")))
        authority = Authority.open_or_found("home", NOW, lambda: None)
    tokens = {
        role: authority.issue(f"u-{role}", "user", role, now=NOW).to_token()
        for role in ("viewer", "submitter", "operator", "admin")
    }
    tokens["node"] = authority.issue("n-00000001", "node", "member", now=NOW).to_token()
    tokens["short"] = authority.issue("u-short", "user", "admin", now=NOW, expires=NOW + 60).to_token()
    return authority, tokens


@pytest.fixture
def env(trust: tuple[Authority, Tokens]) -> Env:
    return Env(trust[0], trust[1], set(), [NOW])


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(env: Env, backend: FakeBackend) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = make_app(
        backend,
        env.verifier(),
        max_body_bytes=1024,
        max_artifact_bytes=4096,
        stream_max_queued=4,
        stream_grace=0.2,
        rng=random.Random(7),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


def last_call(backend: FakeBackend) -> tuple[str, Any]:
    return backend.calls[-1]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def expect_error(resp: aiohttp.ClientResponse, status: int, text: str, path: str | None = None) -> Json:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: Json = await resp.json()
    assert text in body["error"], body
    assert body.get("path") == path
    return body


Client = TestClient[web.Request, web.Application]


# --- authentication and permissions --------------------------------------------------------------------


async def test_missing_and_bad_tokens_are_401_with_a_bearer_challenge(client: Client, env: Env) -> None:
    resp = await client.get("/api/v1/dags")
    await expect_error(resp, 401, "missing bearer token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Basic dXNlcjpwYXNz", "Bearer ", "Bearer swarm1:garbage"):
        resp = await client.get("/api/v1/dags", headers={"Authorization": header})
        assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    await expect_error(
        await client.get("/api/v1/dags", headers=auth(env.tokens["node"])), 401, "node's credential"
    )
    # The query-string token is only for the stream: a link cannot carry a user's rights elsewhere.
    await expect_error(await client.get(f"/api/v1/dags?token={env.tokens['admin']}"), 401, "missing")


async def test_revoked_and_expired_tokens_stop_working_at_once(client: Client, env: Env) -> None:
    assert (await client.get("/api/v1/dags", headers=auth(env.tokens["viewer"]))).status == 200
    env.revoked.add("u-viewer")
    await expect_error(await client.get("/api/v1/dags", headers=auth(env.tokens["viewer"])), 401, "revoked")
    assert (await client.get("/api/v1/dags", headers=auth(env.tokens["short"]))).status == 200
    env.clock[0] = NOW + 61
    await expect_error(await client.get("/api/v1/dags", headers=auth(env.tokens["short"])), 401, "expired")


async def test_roles_gate_each_route(client: Client, env: Env, backend: FakeBackend) -> None:
    viewer, submitter, operator = (env.tokens[r] for r in ("viewer", "submitter", "operator"))
    body = await expect_error(
        await client.post("/api/v1/dag/define", json={"dagId": "d"}, headers=auth(viewer)), 403, "'submit'"
    )
    assert "viewer" in body["error"]
    await expect_error(
        await client.post("/api/v1/runs/r-1/cancel", headers=auth(viewer)), 403, "'submit' permission"
    )
    url = "/api/v1/artifacts/etl/1.0?kind=python&filename=etl.py"
    await expect_error(await client.put(url, data=b"print(1)", headers=auth(submitter)), 403, "'run_code'")
    assert not [c for c in backend.calls if c[0] in ("define_dag", "cancel_run", "push_artifact")]
    resp = await client.put(url, data=b"print(1)", headers=auth(operator))
    assert resp.status == 201 and await resp.json() == {"name": "etl", "version": "1.0", "size": 8}
    assert last_call(backend) == ("push_artifact", ("etl", "1.0", "python", "etl.py", 8, "u-operator"))
    await expect_error(await client.get("/api/v1/status"), 401, "missing")
    assert (await client.get("/api/v1/openapi.json")).status == 200, "the document is public"


# --- the routes -----------------------------------------------------------------------------------------


async def test_define_passes_the_body_and_user_and_answers_201(
    client: Client, env: Env, backend: FakeBackend
) -> None:
    resp = await client.post(
        "/api/v1/dag/define", json={"dagId": "sales", "nodes": []}, headers=auth(env.tokens["submitter"])
    )
    assert resp.status == 201
    assert await resp.json() == {"dagId": "sales", "status": "CREATED", "createdBy": "u-submitter"}
    assert backend.calls == [("define_dag", ({"dagId": "sales", "nodes": []}, "u-submitter"))]
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_bad_bodies_are_400s_that_say_what_is_wrong(client: Client, env: Env) -> None:
    h = {**auth(env.tokens["submitter"]), "Content-Type": "application/json"}
    seed_style = b'{\n  "dagId": "x", // a comment\n}'
    await expect_error(
        await client.post("/api/v1/dag/define", data=seed_style, headers=h), 400, "line 2 column"
    )
    await expect_error(await client.post("/api/v1/dag/define", data=b"[1]", headers=h), 400, "not an array")
    await expect_error(await client.post("/api/v1/dag/define", data=b"", headers=h), 400, "empty")
    await expect_error(
        await client.post("/api/v1/dag/define", data=b"\xff\xfe", headers=h), 400, "invalid JSON"
    )
    resp = await client.post("/api/v1/dag/define", json={"nodes": "bad"}, headers=h)
    await expect_error(resp, 400, "expected an array", "nodes")


async def test_bodies_over_the_limit_are_413_declared_or_chunked(
    client: Client, env: Env, backend: FakeBackend
) -> None:
    h = auth(env.tokens["operator"])
    big = {"dagId": "x" * 2000}
    await expect_error(await client.post("/api/v1/dag/define", json=big, headers=h), 413, "limit of 1024")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"#" * 1000

    url = "/api/v1/artifacts/etl/1?kind=python&filename=etl.py"
    await expect_error(
        await client.put(url, data=chunks(), headers=h), 413, "artifact exceeds the limit of 4096"
    )
    await expect_error(await client.put(url, data=os.urandom(5000), headers=h), 413, "5000 bytes")
    assert not backend.calls
    assert (await client.put(url, data=os.urandom(4096), headers=h)).status == 201


async def test_artifact_parameters_are_checked(client: Client, env: Env) -> None:
    h = auth(env.tokens["operator"])
    base = "/api/v1/artifacts/etl/1"
    await expect_error(await client.put(f"{base}?filename=a.py", data=b"x", headers=h), 400, "kind", "kind")
    await expect_error(
        await client.put(f"{base}?kind=exe&filename=a", data=b"x", headers=h), 400, "exe", "kind"
    )
    for name in ("../etc/passwd", ".hidden", "a b"):
        resp = await client.put(base, params={"kind": "shell", "filename": name}, data=b"x", headers=h)
        await expect_error(resp, 400, "plain file name", "filename")
    await expect_error(
        await client.put(f"{base}?kind=shell&filename=a.sh", data=b"", headers=h), 400, "empty"
    )


async def test_artifact_source_is_never_rendered_as_a_page(client: Client, env: Env) -> None:
    h = auth(env.tokens["viewer"])
    resp = await client.get("/api/v1/artifacts/etl/1/source", headers=h)
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (await resp.read()).startswith(b"<script>")
    resp = await client.get("/api/v1/artifacts/lib/1/source", headers=h)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    await expect_error(
        await client.get("/api/v1/artifacts/nope/1/source", headers=h), 404, "no version", "version"
    )
    assert (await (await client.get("/api/v1/artifacts/etl/2", headers=h)).json())["version"] == "2"
    await expect_error(await client.get("/api/v1/artifacts/nope", headers=h), 404, "no artifact", "name")


async def test_reads_return_envelopes_and_404s_name_the_parameter(
    client: Client, env: Env, backend: FakeBackend
) -> None:
    h = auth(env.tokens["viewer"])
    assert await (await client.get("/api/v1/dags", headers=h)).json() == {
        "dags": [{"dagId": "sales"}],
        "totalEntries": 1,
    }
    assert (await (await client.get("/api/v1/dags/sales/versions/2.0.1", headers=h)).json())[
        "version"
    ] == "2.0.1"
    await expect_error(await client.get("/api/v1/dags/nope", headers=h), 404, "no DAG 'nope'", "dagId")
    await expect_error(await client.get("/api/v1/dags/nope/versions", headers=h), 404, "no DAG", "dagId")
    await expect_error(await client.get("/api/v1/dags/a..b", headers=h), 400, "not a valid id", "dagId")
    await expect_error(await client.get("/api/v1/runs/r-2", headers=h), 404, "no run", "runId")
    for path, key in (
        ("/api/v1/standards", "standards"),
        ("/api/v1/devices", "devices"),
        ("/api/v1/artifacts", "artifacts"),
    ):
        assert key in await (await client.get(path, headers=h)).json()
    assert await (await client.get("/api/v1/status", headers=h)).json() == {"nodeId": "n-1", "epoch": 3}
    assert (await (await client.get("/api/v1/dags/sales/analytics", headers=h)).json()) == {"dagId": "sales"}
    await client.get("/api/v1/dags/sales/history?limit=7", headers=h)
    assert last_call(backend) == ("history", ("sales", 7))


async def test_run_queries_are_validated(client: Client, env: Env, backend: FakeBackend) -> None:
    h = auth(env.tokens["viewer"])
    assert (await client.get("/api/v1/runs?dagId=sales&state=RUNNING&limit=5", headers=h)).status == 200
    assert last_call(backend) == ("list_runs", ("sales", 5, "RUNNING"))
    await client.get("/api/v1/runs", headers=h)
    assert last_call(backend) == ("list_runs", (None, 100, None))
    for bad in ("0", "1001", "abc", "-1", "1e3"):
        await expect_error(
            await client.get(f"/api/v1/runs?limit={bad}", headers=h), 400, "1 to 1000", "limit"
        )
    await expect_error(await client.get("/api/v1/runs?state=a;b", headers=h), 400, "state name", "state")
    await expect_error(await client.get("/api/v1/runs?dagId=/x", headers=h), 400, "valid id", "dagId")


async def test_runs_start_cancel_and_modify(client: Client, env: Env, backend: FakeBackend) -> None:
    h = auth(env.tokens["submitter"])
    resp = await client.post(
        "/api/v1/dags/sales/runs", json={"params": {"day": 1}, "runId": "r-9"}, headers=h
    )
    assert resp.status == 202 and (await resp.json())["runId"] == "r-9"
    assert last_call(backend) == (
        "start_run",
        ("sales", {"params": {"day": 1}, "runId": "r-9"}, "u-submitter"),
    )
    url = "/api/v1/dags/sales/runs"
    await expect_error(
        await client.post(url, json={"params": [1]}, headers=h), 400, "expected an object", "params"
    )
    await expect_error(await client.post(url, json={"version": 3}, headers=h), 400, "a string", "version")
    await expect_error(await client.post(url, json={"runId": "a/b"}, headers=h), 400, "valid id", "runId")
    resp = await client.post("/api/v1/runs/r-1/cancel", headers=h)
    assert resp.status == 200 and (await resp.json())["status"] == "CANCELLED"
    assert (await client.patch("/api/v1/runs/r-1", json={"skip": ["a"]}, headers=h)).status == 200
    await expect_error(await client.patch("/api/v1/runs/r-1", json={}, headers=h), 400, "nothing to change")
    await expect_error(
        await client.patch("/api/v1/runs/r-1", json={"skip": "a"}, headers=h), 400, "array", "skip"
    )
    resp = await client.patch("/api/v1/runs/r-1", json={"skip": ["a", 5]}, headers=h)
    await expect_error(resp, 400, "not a valid node id", "skip[1]")
    resp = await client.post(
        "/api/v1/resources/allocate", json={"allocationId": "a-1", "dagId": "sales"}, headers=h
    )
    assert resp.status == 200 and (await resp.json())["status"] == "ALLOCATED"


async def test_backend_refusals_map_to_their_statuses(client: Client, env: Env, backend: FakeBackend) -> None:
    h = auth(env.tokens["submitter"])
    cases: list[tuple[Exception, int]] = [
        (Forbidden("u-submitter may not cancel run r-1 of u-other"), 403),
        (Conflict("run r-1 has ended", "runId"), 409),
        (NotFound("no run 'r-1'", "runId"), 404),
        (InvalidSpec("bad"), 400),
    ]
    for exc, status in cases:
        backend.raise_next = exc
        body = await expect_error(
            await client.post("/api/v1/runs/r-1/cancel", headers=h),
            status,
            str(exc),
            getattr(exc, "path", None),
        )
        assert set(body) <= {"error", "path"}


async def test_a_backend_bug_is_a_500_with_an_id_and_the_server_goes_on(
    client: Client, env: Env, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    h = auth(env.tokens["viewer"])
    backend.raise_next = KeyError("secret detail")
    with caplog.at_level(logging.ERROR, logger="swarm.api.app"):
        resp = await client.get("/api/v1/dags", headers=h)
    body = await expect_error(resp, 500, "internal error")
    assert "secret" not in await resp.text()
    assert len(body["id"]) == 8 and body["id"] in caplog.text and "KeyError" in caplog.text
    assert (await client.get("/api/v1/dags", headers=h)).status == 200


async def test_unknown_routes_and_methods_are_json(client: Client, env: Env) -> None:
    h = auth(env.tokens["viewer"])
    await expect_error(await client.get("/api/v1/nothing", headers=h), 404, "no such resource")
    resp = await client.delete("/api/v1/dags", headers=h)
    await expect_error(resp, 405, "DELETE is not allowed")
    assert "GET" in resp.headers["Allow"]


# --- the document ---------------------------------------------------------------------------------------


def _app_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path and path.startswith("/api/v1"):
            found.add((route.method.lower(), path))
    return found


async def test_the_document_names_exactly_the_routes_served(client: Client, env: Env) -> None:
    doc = build_openapi()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert _app_routes(client.app) == documented
    assert (
        doc["openapi"].startswith("3.1")
        and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    )
    served = await (await client.get("/api/v1/openapi.json")).json()
    assert served == doc
    define = doc["components"]["schemas"]["DefineResponse"]["properties"]
    assert {"validationResults", "dataFlowAnalysis", "estimatedResourceUsage", "nextSteps"} <= set(define)
    assert len(ROUTES) + 1 == len(documented)


def test_the_document_is_self_consistent() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, ops in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert declared == templated, (method, path)
            assert op["responses"] and op["summary"], (method, path)
            assert ("security" in op) == (path == "/api/v1/openapi.json"), (method, path)


# --- the stream -----------------------------------------------------------------------------------------


async def test_the_stream_sends_events_and_closes_the_subscription_when_the_client_goes(
    client: Client, env: Env, backend: FakeBackend
) -> None:
    backend.events = [{"type": "run", "runId": "r-1"}, {"type": "node", "nodeId": "a"}]
    async with client.ws_connect("/api/v1/stream", headers=auth(env.tokens["viewer"])) as ws:
        assert await ws.receive_json(timeout=2) == {"type": "run", "runId": "r-1"}
        assert await ws.receive_json(timeout=2) == {"type": "node", "nodeId": "a"}
    for _ in range(100):
        if backend.subscriptions_closed:
            break
        await asyncio.sleep(0.01)
    assert backend.subscriptions_closed == 1


async def test_the_stream_takes_a_query_token_and_refuses_before_upgrading(
    client: Client, env: Env, backend: FakeBackend
) -> None:
    backend.events, backend.end_stream = [{"type": "hello"}], True
    async with client.ws_connect(f"/api/v1/stream?token={env.tokens['viewer']}") as ws:
        assert await ws.receive_json(timeout=2) == {"type": "hello"}
        closing = await ws.receive(timeout=2)
        assert closing.type == WSMsgType.CLOSE and closing.data == 1000
    for token in ("", "?token=swarm1:junk", f"?token={env.tokens['node']}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"/api/v1/stream{token}")
        assert info.value.status == 401
    assert backend.subscriptions_opened == 1, "a refused client never subscribes"


async def test_a_stream_whose_token_is_revoked_is_closed_1008(
    client: Client, env: Env, backend: FakeBackend
) -> None:
    backend.events = [{"type": "a"}]
    async with client.ws_connect("/api/v1/stream", headers=auth(env.tokens["operator"])) as ws:
        assert await ws.receive_json(timeout=2) == {"type": "a"}
        env.revoked.add("u-operator")
        backend.live.put_nowait({"type": "b"})
        msg = await ws.receive(timeout=2)
        assert msg.type == WSMsgType.CLOSE and msg.data == 1008


async def test_a_slow_stream_client_is_dropped_not_buffered(
    client: Client, env: Env, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="swarm.api.stream")
    # Incompressible frames, and a client that reads nothing: the socket fills, then the queue, then it goes.
    backend.events = [{"type": "blob", "n": i, "data": os.urandom(48_000).hex()} for i in range(400)]
    ws = await client.ws_connect("/api/v1/stream", headers=auth(env.tokens["viewer"]), compress=0)
    for _ in range(300):
        if backend.subscriptions_closed:
            break
        await asyncio.sleep(0.02)
    assert backend.subscriptions_closed == 1, "the server gave up on the client"
    assert "dropping a client" in caplog.text
    received = 0
    while (await ws.receive(timeout=5)).type == WSMsgType.TEXT:
        received += 1
    assert received < len(backend.events)
    await ws.close()


async def test_the_pump_drops_a_stuck_client_with_1013_after_the_grace() -> None:
    sent: list[str] = []
    closed: list[int] = []
    stuck = asyncio.Event()

    async def send(frame: str) -> None:
        sent.append(frame)
        await stuck.wait()

    async def close_(code: int, why: str) -> None:
        closed.append(code)

    async def events() -> AsyncIterator[Json]:
        for i in range(100):
            yield {"type": "x", "n": i}

    outcome = await pump(events(), send, close_, max_queued=3, grace=0.05)
    assert outcome == "slow" and closed == [1013] and sent == ['{"type":"x","n":0}']


async def test_the_pump_lets_a_burst_through_to_a_client_that_keeps_up() -> None:
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)
        await asyncio.sleep(0)

    async def close_(code: int, why: str) -> None:
        raise AssertionError("a client that keeps up is not closed")

    async def events() -> AsyncIterator[Json]:
        for i in range(500):
            yield {"type": "x", "n": i}

    assert await pump(events(), send, close_, max_queued=3, grace=1.0) == "ended"
    assert len(sent) == 500 and sent[-1] == '{"type":"x","n":499}'


# --- static files and serving --------------------------------------------------------------------------


async def test_static_files_are_served_without_listings(
    tmp_path: Path, env: Env, backend: FakeBackend
) -> None:
    (tmp_path / "index.html").write_text("<h1>cockpit</h1>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("let x = 1;")
    app = make_app(backend, env.verifier(), static_dir=tmp_path)
    async with TestClient(TestServer(app)) as c:
        assert await (await c.get("/")).text() == "<h1>cockpit</h1>"
        assert await (await c.get("/js/app.js")).text() == "let x = 1;"
        assert (await c.get("/js/")).status in (403, 404)
        await expect_error(await c.get("/missing.css"), 404, "no such resource")
        assert (await c.get("/../etc/passwd")).status in (403, 404)
        assert (await c.get("/api/v1/dags", headers=auth(env.tokens["viewer"]))).status == 200
        await expect_error(await c.post("/api/v1/dags", headers=auth(env.tokens["viewer"])), 405, "POST")


async def test_serve_binds_a_free_port_and_logs_no_query_strings(
    env: Env, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    runner, port = await serve(make_app(backend, env.verifier()), "127.0.0.1", 0)
    try:
        assert port > 0
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/api/v1/status?token=sekrit"
                async with session.get(url, headers=auth(env.tokens["viewer"])) as resp:
                    assert resp.status == 200
        assert "/api/v1/status" in caplog.text and "sekrit" not in caplog.text
    finally:
        await close(runner)
