"""The OpenAPI 3.1 document of the node's HTTP API, served at `/api/v1/openapi.json`.

It is written out by hand rather than generated from the routes, so that it is documentation a person
wrote; `tests/unit/test_api_app.py` checks that it names exactly the routes the application serves. Field
names are seed 004's camelCase.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_openapi"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], required: tuple[str, ...] = (), *, open_: bool = True) -> Schema:
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if not open_:
        out["additionalProperties"] = False
    return out


def _arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _list_of(key: str, item: str) -> Schema:
    return _obj({key: _arr(_ref(item)), "totalEntries": {"type": "integer"}}, (key, "totalEntries"))


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}
_ANY_OBJ: Schema = {"type": "object"}
_DURATION: Schema = {"type": "string", "description": "ISO-8601 duration, e.g. PT30M"}
_RANGE: Schema = _obj({"min": _NUM, "max": _NUM, "average": _NUM})


def _schemas() -> dict[str, Schema]:
    field = _obj({"type": _STR, "required": _BOOL, "default": {}, "description": _STR}, ("type",))
    return {
        "Error": _obj(
            {
                "error": {"type": "string", "description": "what is wrong"},
                "path": {"type": "string", "description": "the field or parameter at fault"},
                "id": {"type": "string", "description": "for 500s: the id of the logged traceback"},
            },
            ("error",),
        ),
        "RetryPolicy": _obj({"maxRetries": _INT, "retryInterval": _DURATION, "backoffMultiplier": _NUM}),
        "Schedule": _obj(
            {
                "type": {"type": "string", "description": "CRON, MANUAL, ..."},
                "expression": _STR,
                "timezone": _STR,
                "retryPolicy": _ref("RetryPolicy"),
            }
        ),
        "TaskDefinition": _obj(
            {
                "artifactId": _STR,
                "className": _STR,
                "entrypoint": _STR,
                "runtime": {"type": "string", "description": "PYTHON_3.9, SHELL, JAVA_17, SCALA_2.12, ..."},
                "inputSchema": {"type": "object", "additionalProperties": field},
                "outputSchema": {"type": "object", "additionalProperties": field},
            }
        ),
        "DagNode": _obj(
            {
                "nodeId": _STR,
                "name": _STR,
                "type": {"type": "string", "description": "EXTRACT, TRANSFORM, ANALYZE, ..."},
                "position": _obj({"x": _NUM, "y": _NUM, "z": _NUM}),
                "taskDefinition": _ref("TaskDefinition"),
                "resourceRequirements": _obj(
                    {
                        "cpuCores": _NUM,
                        "memoryMB": _INT,
                        "diskGB": _NUM,
                        "gpuUnits": _INT,
                        "networkBandwidth": _STR,
                    }
                ),
                "executionConfig": _obj(
                    {
                        "timeout": _DURATION,
                        "parallelism": _INT,
                        "isMapStage": _BOOL,
                        "isReduceStage": _BOOL,
                        "partitionStrategy": _STR,
                        "memoryIntensive": _BOOL,
                    }
                ),
            },
            ("nodeId", "taskDefinition"),
        ),
        "DagEdge": _obj(
            {
                "from": _STR,
                "to": _STR,
                "dataMapping": {
                    "type": "object",
                    "additionalProperties": _STR,
                    "description": "downstream input name -> upstream output name",
                },
                "condition": {
                    "type": "string",
                    "description": "SUCCESS, FAILURE, ALWAYS, SKIPPED [AND expr]",
                },
            },
            ("from", "to"),
        ),
        "DagDefinition": _obj(
            {
                "dagId": _STR,
                "name": _STR,
                "description": _STR,
                "version": _STR,
                "schedule": _ref("Schedule"),
                "nodes": _arr(_ref("DagNode")),
                "edges": _arr(_ref("DagEdge")),
                "globalConfigs": _obj(
                    {
                        "defaultResourcePool": _STR,
                        "dataRetentionPolicy": _STR,
                        "notificationChannels": _arr(_STR),
                        "observabilityLevel": _STR,
                    }
                ),
                "mapReduceConfig": _obj(
                    {
                        "enabled": _BOOL,
                        "mapParallelismDefault": _INT,
                        "reduceParallelismDefault": _INT,
                        "shuffleStrategy": _STR,
                        "compressionEnabled": _BOOL,
                        "spillThresholdMB": _INT,
                    }
                ),
            },
            ("dagId", "version", "nodes"),
        ),
        "DefineResponse": _obj(
            {
                "dagId": _STR,
                "version": _STR,
                "status": _STR,
                "createdAt": {"type": "string", "format": "date-time"},
                "createdBy": _STR,
                "validationResults": _obj(
                    {
                        "isValid": _BOOL,
                        "warnings": _arr(_obj({"nodeId": _STR, "message": _STR, "severity": _STR})),
                        "suggestions": _arr(_obj({"nodeId": _STR, "message": _STR, "action": _STR})),
                    }
                ),
                "estimatedExecutionTime": _DURATION,
                "estimatedResourceUsage": _obj(
                    {"cpuCores": _RANGE, "memoryMB": _RANGE, "dataProcessedGB": _NUM}
                ),
                "dataFlowAnalysis": _obj(
                    {
                        "bottleneckNode": _STR,
                        "criticalPath": _arr(_STR),
                        "parallelizableSections": _arr(_obj({"nodes": _arr(_STR), "maxParallelism": _INT})),
                    }
                ),
                "visualizationUrl": _STR,
                "nextSteps": _arr(_STR),
            },
            ("dagId", "version", "status", "validationResults"),
        ),
        "DagSummary": _obj({"dagId": _STR, "name": _STR, "latestVersion": _STR}, ("dagId",)),
        "DagVersion": _obj({"dagId": _STR, "version": _STR, "createdAt": _STR, "createdBy": _STR}),
        "RunStart": _obj(
            {"params": _ANY_OBJ, "version": _STR, "runId": _STR},
        ),
        "RunModify": _obj(
            {
                "skip": _arr(_STR),
                "add": _obj({"nodes": _arr(_ref("DagNode")), "edges": _arr(_ref("DagEdge"))}),
            }
        ),
        "NodeRun": _obj(
            {
                "nodeId": _STR,
                "status": {"type": "string", "description": "QUEUED, WAITING, RUNNING, SUCCESS, FAILED, ..."},
                "attempts": _INT,
                "startedAt": _STR,
                "completedAt": _STR,
                "outputs": _ANY_OBJ,
            }
        ),
        "Run": _obj(
            {
                "runId": _STR,
                "dagId": _STR,
                "version": _STR,
                "status": _STR,
                "params": _ANY_OBJ,
                "createdBy": _STR,
                "triggeredAt": _STR,
                "completedAt": _STR,
                "nodes": _arr(_ref("NodeRun")),
            },
            ("runId", "dagId", "status"),
        ),
        "AllocateRequest": _obj(
            {
                "allocationId": _STR,
                "dagId": _STR,
                "executionId": _STR,
                "resourceRequirements": _ANY_OBJ,
                "schedulingConstraints": _ANY_OBJ,
                "priorityConfig": _ANY_OBJ,
                "monitoringConfig": _ANY_OBJ,
            },
            ("dagId",),
        ),
        "AllocateResponse": _obj(
            {
                "allocationId": _STR,
                "status": _STR,
                "allocationTime": _STR,
                "allocatedResources": _ANY_OBJ,
                "estimatedStartTime": _STR,
                "estimatedCompletionTime": _STR,
                "optimizationApplied": _arr(_obj({"type": _STR, "description": _STR})),
                "monitoringEndpoints": _ANY_OBJ,
                "nextActions": _arr(_STR),
            }
        ),
        "Artifact": _obj(
            {
                "name": _STR,
                "version": _STR,
                "kind": {"type": "string", "enum": ["python", "shell", "jar", "mapreduce"]},
                "filename": _STR,
                "size": _INT,
                "sha256": _STR,
                "createdBy": _STR,
            }
        ),
        "Standard": _obj({"name": _STR, "description": _STR, "taskDefinition": _ref("TaskDefinition")}),
        "Device": _obj({"nodeId": _STR, "state": _STR, "capacity": _ANY_OBJ}),
        "Status": _obj({"nodeId": _STR, "cluster": _STR, "coordinator": _STR, "epoch": _INT}),
        "Event": _obj({"type": _STR}, ("type",)),
    }


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


_UNAUTHORISED = _error("missing or invalid bearer token (with `WWW-Authenticate: Bearer`)")
_FORBIDDEN = _error("the token's role lacks the permission this operation needs")


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    permission: str | None,
    responses: dict[str, Schema],
    *,
    body: Schema | None = None,
    params: list[Schema] | None = None,
) -> Schema:
    out: Schema = {"summary": summary, "responses": dict(responses)}
    if permission is None:
        out["security"] = []
    else:
        out["description"] = f"Needs the `{permission}` permission."
        out["x-swarm-permission"] = permission
        out["responses"].update({"401": _UNAUTHORISED, "403": _FORBIDDEN})
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        out["responses"].setdefault("400", _error("invalid JSON or an invalid field (`path` names it)"))
        out["responses"]["413"] = _error("the body exceeds the size limit")
    if params:
        out["parameters"] = params
        out["responses"].setdefault("400", _error("an invalid parameter (`path` names it)"))
    return out


def _path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _STR}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many items")
_NOT_FOUND = _error("no such object")


def _paths() -> dict[str, Schema]:
    dag = [_path_param("dagId", "the DAG's id")]
    run = [_path_param("runId", "the run's id")]
    art = [_path_param("name", "the artifact's name")]
    art_v = [*art, _path_param("version", "the artifact's version")]
    return {
        "/api/v1/dag/define": {
            "post": _op(
                "Define a DAG version (seed 004)",
                "submit",
                {
                    "201": _json("defined, with validation and analysis", _ref("DefineResponse")),
                    "409": _error("this version exists with a different body"),
                },
                body=_ref("DagDefinition"),
            )
        },
        "/api/v1/dags": {
            "get": _op("List DAGs", "view", {"200": _json("the DAGs", _list_of("dags", "DagSummary"))})
        },
        "/api/v1/dags/{dagId}": {
            "get": _op(
                "A DAG's latest version",
                "view",
                {"200": _json("the definition", _ref("DagDefinition")), "404": _NOT_FOUND},
                params=dag,
            )
        },
        "/api/v1/dags/{dagId}/versions": {
            "get": _op(
                "A DAG's versions",
                "view",
                {"200": _json("the versions", _list_of("versions", "DagVersion")), "404": _NOT_FOUND},
                params=dag,
            )
        },
        "/api/v1/dags/{dagId}/versions/{version}": {
            "get": _op(
                "One version of a DAG",
                "view",
                {"200": _json("the definition", _ref("DagDefinition")), "404": _NOT_FOUND},
                params=[*dag, _path_param("version", "the version")],
            )
        },
        "/api/v1/dags/{dagId}/runs": {
            "post": _op(
                "Start a run of a DAG",
                "submit",
                {
                    "202": _json("the run, started", _ref("Run")),
                    "404": _NOT_FOUND,
                    "409": _error("runId in use"),
                },
                body=_ref("RunStart"),
                params=dag,
            )
        },
        "/api/v1/dags/{dagId}/history": {
            "get": _op(
                "A DAG's past runs with per-node executions",
                "view",
                {"200": _json("the history", _ANY_OBJ), "404": _NOT_FOUND},
                params=[*dag, _LIMIT],
            )
        },
        "/api/v1/dags/{dagId}/analytics": {
            "get": _op(
                "Aggregates over a DAG's history",
                "view",
                {"200": _json("the analytics", _ANY_OBJ), "404": _NOT_FOUND},
                params=dag,
            )
        },
        "/api/v1/runs": {
            "get": _op(
                "List runs, newest first",
                "view",
                {"200": _json("the runs", _list_of("runs", "Run"))},
                params=[
                    _query("dagId", _STR, "only this DAG's runs"),
                    _query("state", _STR, "only runs in this state (e.g. RUNNING)"),
                    _LIMIT,
                ],
            )
        },
        "/api/v1/runs/{runId}": {
            "get": _op(
                "A run", "view", {"200": _json("the run", _ref("Run")), "404": _NOT_FOUND}, params=run
            ),
            "patch": _op(
                "Modify a live run: skip nodes or add nodes and edges",
                "submit",
                {"200": _json("the run", _ref("Run")), "404": _NOT_FOUND, "409": _error("the run has ended")},
                body=_ref("RunModify"),
                params=run,
            ),
        },
        "/api/v1/runs/{runId}/cancel": {
            "post": _op(
                "Cancel a run (one's own, or any with `cancel_any`)",
                "submit",
                {"200": _json("the run", _ref("Run")), "404": _NOT_FOUND},
                params=run,
            )
        },
        "/api/v1/resources/allocate": {
            "post": _op(
                "Allocate resources for a DAG's execution (seed 004)",
                "submit",
                {"200": _json("allocated", _ref("AllocateResponse"))},
                body=_ref("AllocateRequest"),
            )
        },
        "/api/v1/artifacts": {
            "get": _op(
                "List artifacts", "view", {"200": _json("the artifacts", _list_of("artifacts", "Artifact"))}
            )
        },
        "/api/v1/artifacts/{name}": {
            "get": _op(
                "An artifact's versions",
                "view",
                {"200": _json("the artifact", _ref("Artifact")), "404": _NOT_FOUND},
                params=art,
            )
        },
        "/api/v1/artifacts/{name}/{version}": {
            "get": _op(
                "One version of an artifact",
                "view",
                {"200": _json("the artifact", _ref("Artifact")), "404": _NOT_FOUND},
                params=art_v,
            ),
            "put": {
                **_op(
                    "Push an artifact (code the cluster will run)",
                    "run_code",
                    {
                        "201": _json("stored", _ref("Artifact")),
                        "409": _error("this version exists with other bytes"),
                        "413": _error("the artifact exceeds the size limit"),
                    },
                    params=[
                        *art_v,
                        {
                            **_query(
                                "kind",
                                {"type": "string", "enum": ["python", "shell", "jar", "mapreduce"]},
                                "the kind",
                            ),
                            "required": True,
                        },
                        {**_query("filename", _STR, "the file's name"), "required": True},
                    ],
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
            },
        },
        "/api/v1/artifacts/{name}/{version}/source": {
            "get": _op(
                "An artifact's bytes, for reading (served as text/plain or application/octet-stream)",
                "view",
                {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/plain": {"schema": _STR},
                            "application/octet-stream": {"schema": _STR},
                        },
                    },
                    "404": _NOT_FOUND,
                },
                params=art_v,
            )
        },
        "/api/v1/standards": {
            "get": _op(
                "List task standards",
                "view",
                {"200": _json("the standards", _list_of("standards", "Standard"))},
            ),
            "post": _op(
                "Define a task standard",
                "submit",
                {"201": _json("defined", _ref("Standard")), "409": _error("exists with another body")},
                body=_ref("Standard"),
            ),
        },
        "/api/v1/devices": {
            "get": _op(
                "The member devices", "view", {"200": _json("the devices", _list_of("devices", "Device"))}
            )
        },
        "/api/v1/status": {
            "get": _op("This node's view of the cluster", "view", {"200": _json("status", _ref("Status"))})
        },
        "/api/v1/openapi.json": {"get": _op("This document", None, {"200": _json("the document", _ANY_OBJ)})},
        "/api/v1/stream": {
            "get": _op(
                "The event stream (WebSocket): each event is a JSON text frame with a `type`. The token may"
                " also be given as `?token=` (browsers cannot set headers on WebSockets). A client too slow"
                " to keep up is closed with code 1013; one whose token is revoked, with 1008.",
                "view",
                {
                    "101": {
                        "description": "switching to the WebSocket protocol",
                        "content": {"application/json": {"schema": _ref("Event")}},
                    }
                },
                params=[_query("token", _STR, "the bearer token, when no Authorization header can be sent")],
            )
        },
    }


def build_openapi(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document (a new dict each call; the application builds it once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "swarm node API",
            "version": "1.0.0",
            "description": (
                "Every node of a swarm cluster serves this API. Authenticate with a cluster token "
                "(`swarm token create`) as `Authorization: Bearer <token>`. Errors are JSON "
                '`{"error": "...", "path": "..."}`.'
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "swarm1 cluster token",
                    "description": "a user token of this cluster; node credentials are refused",
                }
            },
            "schemas": _schemas(),
        },
    }
