"""A synchronous Python client of a node's HTTP API (`swarm join` serves it; `swarm status` shows its URL).

It needs nothing beyond the standard library and orjson, so scripts and notebooks can drive a cluster::

    from pathlib import Path
    from swarm.apiclient import ApiClient

    api = ApiClient("http://127.0.0.1:8765", token)          # a `swarm token create` token
    api.push_artifact(Path("steps.py"), "steps", "1.0")
    api.define(yaml.safe_load(Path("dag.yaml").read_text()))
    run = api.run("squares", params={"n": 10})
    final = api.wait(run["runId"], timeout=600)
    print(final["state"])                                     # SUCCESS, FAILED or CANCELLED

Every method returns the server's JSON; list endpoints return their list, unwrapped from the envelope.
A refusal raises `ApiError` with the server's message, its HTTP status and the field `path` it names; a
node that does not answer raises `ApiError` with status 0 saying which URL was tried.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from swarm.errors import InvalidSpec, RemoteError
from swarm.runtime.artifacts import pack
from swarm.workflow.model import DagDefinition

__all__ = ["FINAL_STATES", "ApiClient", "ApiError", "infer_kind"]

Json = dict[str, Any]

#: Run states after which a run never changes again.
FINAL_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
_PREFIX = "/api/v1"
#: Seconds a run may stay unknown to the node while `wait` polls: it may not have reached its history yet.
_UNKNOWN_GRACE = 5.0
_KINDS_BY_SUFFIX = {".py": "python", ".sh": "shell", ".jar": "jar"}


class ApiError(RemoteError):
    """The API refused a request (`status` is its HTTP status) or did not answer (`status` 0).

    `message` is the server's `error` text and `path` the request field or parameter it names, if any.
    """

    def __init__(self, status: int, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path


def infer_kind(path: Path) -> str:
    """The artifact kind of a file or directory: a directory or .py is python, .sh shell, .jar jar."""
    if path.is_dir():
        return "python"
    kind = _KINDS_BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise InvalidSpec(
            f"{path.name}: cannot tell the artifact kind from the name; give it (python, shell or jar)"
        )
    return kind


def _quote(part: str) -> str:
    # Ids may hold '@' and ':' (run ids do); everything else that is not plain is escaped.
    return urllib.parse.quote(part, safe="@:=")


class ApiClient:
    """A client of one node's API at `url` (e.g. `http://127.0.0.1:8765`), authenticated by `token`.

    `timeout` bounds each request in seconds. `clock` and `sleep` are what `wait` measures and pauses
    with; tests pass their own.
    """

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidSpec(f"API URL: expected http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep

    # --- DAGs ---------------------------------------------------------------------------------------

    def define(self, definition: Mapping[str, Any] | DagDefinition) -> Json:
        """Define (or re-send) a DAG version; the answer carries `validationResults` and the analysis.

        A definition the server cannot parse raises ApiError 400 naming the field (`path`); one that
        parses but fails validation is answered with `status` INVALID and its errors.
        """
        body = definition.to_json() if isinstance(definition, DagDefinition) else dict(definition)
        return self._json("POST", "/dag/define", body)

    def dags(self) -> list[Json]:
        """Every DAG with its latest version and last run."""
        return self._list("GET", "/dags", "dags")

    def dag(self, dag_id: str, version: str | None = None) -> Json:
        """One version of a DAG (the latest when `version` is None) with its definition."""
        path = f"/dags/{_quote(dag_id)}"
        if version is not None:
            path += f"/versions/{_quote(version)}"
        return self._json("GET", path)

    def versions(self, dag_id: str) -> list[Json]:
        """Every version of a DAG."""
        return self._list("GET", f"/dags/{_quote(dag_id)}/versions", "versions")

    def history(self, dag_id: str, limit: int = 20) -> Json:
        """The newest runs of a DAG with their step executions."""
        return self._json("GET", f"/dags/{_quote(dag_id)}/history?limit={int(limit)}")

    def analytics(self, dag_id: str) -> Json:
        """Per-step statistics, the data-flow analysis and suggestions from the DAG's measured runs."""
        return self._json("GET", f"/dags/{_quote(dag_id)}/analytics")

    # --- runs ---------------------------------------------------------------------------------------

    def run(
        self,
        dag_id: str,
        params: Mapping[str, Any] | None = None,
        version: str | None = None,
        run_id: str | None = None,
    ) -> Json:
        """Start a run (of the latest valid version unless `version`); `runId` is in the answer.

        Giving a `run_id` makes the call idempotent: the same id again answers the existing run.
        """
        body: Json = {"params": dict(params or {})}
        if version is not None:
            body["version"] = version
        if run_id is not None:
            body["runId"] = run_id
        return self._json("POST", f"/dags/{_quote(dag_id)}/runs", body)

    def get_run(self, run_id: str) -> Json:
        """A run with its step executions (`nodes`)."""
        return self._json("GET", f"/runs/{_quote(run_id)}")

    def runs(self, dag_id: str | None = None, state: str | None = None, limit: int = 100) -> list[Json]:
        """The newest runs, optionally of one DAG and in one state (QUEUED, RUNNING, SUCCESS, ...)."""
        query: dict[str, str] = {"limit": str(int(limit))}
        if dag_id is not None:
            query["dagId"] = dag_id
        if state is not None:
            query["state"] = state
        return self._list("GET", "/runs?" + urllib.parse.urlencode(query), "runs")

    def cancel(self, run_id: str) -> Json:
        """Ask the cluster to cancel every unfinished step of a run."""
        return self._json("POST", f"/runs/{_quote(run_id)}/cancel", {})

    def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        poll: float = 0.2,
        on_change: Callable[[Json], None] | None = None,
    ) -> Json:
        """Poll a run until it is SUCCESS, FAILED or CANCELLED and return it.

        `on_change(run)` is called with the run whenever its state or a step's state or attempt changed
        (and once at the first poll). Raises TimeoutError after `timeout` seconds (None: no limit), and
        ApiError 404 if the node still does not know the run after a few seconds.
        """
        start = self._clock()
        seen: object = None
        while True:
            try:
                run = self.get_run(run_id)
            except ApiError as exc:
                if exc.status != 404 or self._clock() - start > _UNKNOWN_GRACE:
                    raise
                run = None
            if run is not None:
                signature = (
                    run.get("state"),
                    tuple(
                        (n.get("nodeId"), n.get("shard"), n.get("state"), n.get("attempt"))
                        for n in run.get("nodes", ())
                    ),
                )
                if signature != seen:
                    seen = signature
                    if on_change is not None:
                        on_change(run)
                if run.get("state") in FINAL_STATES:
                    return run
            if timeout is not None and self._clock() - start >= timeout:
                raise TimeoutError(f"run {run_id} did not finish within {timeout:g} s")
            self._sleep(poll)

    # --- artifacts ----------------------------------------------------------------------------------

    def push_artifact(self, path: Path, name: str, version: str, kind: str | None = None) -> Json:
        """Upload a file, or a directory (zipped by `swarm.runtime.artifacts.pack`), as `name` `version`.

        `kind` (python, shell, jar, mapreduce) defaults to what the path looks like (`infer_kind`).
        Versions are immutable: pushing other bytes under an existing version is refused (409).
        """
        path = Path(path)
        if not path.exists():
            raise InvalidSpec(f"{path}: no such file or directory")
        kind = kind or infer_kind(path)
        filename, data = pack(path)
        query = urllib.parse.urlencode({"kind": kind, "filename": filename})
        target = f"/artifacts/{_quote(name)}/{_quote(version)}?{query}"
        return self._json("PUT", target, raw=data)

    def artifacts(self) -> list[Json]:
        """Every artifact version the cluster knows, newest version first per name."""
        return self._list("GET", "/artifacts", "artifacts")

    def artifact(self, name: str, version: str | None = None) -> Json:
        """One version's metadata, or (`version` None) `{"name", "versions": [...]}`, newest first."""
        path = f"/artifacts/{_quote(name)}"
        if version is not None:
            path += f"/{_quote(version)}"
        return self._json("GET", path)

    def artifact_source(self, name: str, version: str) -> bytes:
        """The bytes of an artifact version; only the node that took the upload holds them."""
        return self._request("GET", f"/artifacts/{_quote(name)}/{_quote(version)}/source")

    # --- the cluster --------------------------------------------------------------------------------

    def devices(self) -> list[Json]:
        """Every member with its state, capabilities and load."""
        return self._list("GET", "/devices", "devices")

    def status(self) -> Json:
        """The node's view of the cluster."""
        return self._json("GET", "/status")

    # --- plumbing -----------------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Json | None = None, *, raw: bytes | None = None) -> Json:
        """The JSON object answered to `body` (sent as JSON) or `raw` (sent as bytes)."""
        if raw is not None:
            answer = self._request(method, path, raw, "application/octet-stream")
        elif body is not None:
            answer = self._request(method, path, orjson.dumps(body), "application/json")
        else:
            answer = self._request(method, path)
        value = self._decode(answer, path)
        if not isinstance(value, dict):
            raise ApiError(200, f"{method} {path}: expected a JSON object from the server")
        return value

    def _list(self, method: str, path: str, key: str) -> list[Json]:
        value = self._json(method, path).get(key)
        if not isinstance(value, list):
            raise ApiError(200, f"{method} {path}: the answer has no {key!r} list")
        return list(value)

    def _decode(self, answer: bytes, path: str) -> Any:
        try:
            return orjson.loads(answer)
        except orjson.JSONDecodeError:
            raise ApiError(200, f"{self.url}{_PREFIX}{path} did not answer JSON") from None

    def _request(self, method: str, path: str, data: bytes | None = None, ctype: str | None = None) -> bytes:
        url = self.url + _PREFIX + path
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if ctype is not None:
            request.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (TimeoutError, ConnectionError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, reason: object) -> ApiError:
        if isinstance(reason, TimeoutError):
            why = f"did not answer within {self.timeout:g} s"
        elif isinstance(reason, ConnectionRefusedError):
            why = "refused the connection"
        else:
            why = f"did not answer ({reason})"
        return ApiError(
            0,
            f"the node API at {self.url} {why}: is a node running there? `swarm status` shows the"
            " cluster's API URL (give it with --api or $SWARM_API)",
        )


def _refusal(exc: urllib.error.HTTPError) -> ApiError:
    """The ApiError of an HTTP error answer, from its JSON `{"error", "path"?}` when it has one."""
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    message, path = "", None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
        path = body["path"] if isinstance(body.get("path"), str) else None
        if body.get("id"):
            message += f" (error id {body['id']})"
    else:
        message = raw[:200].decode("utf-8", "replace").strip() or str(exc.reason)
    return ApiError(exc.code, message or f"HTTP {exc.code}", path)
