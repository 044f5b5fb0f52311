"""An OpenAPI 3 description of the emulated v4 surface, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STATUS = {"type": "string", "enum": ["Created", "InProgress", "Complete", "Failed", "Canceled"]}
REF = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
NULLABLE_STRING = {"type": ["string", "null"]}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _error("Validation failed"),
    "401": _error("Missing or refused credentials"),
    "404": _error("No such object"),
}
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ASSOCIATIONS = "|".join(
    [
        "jobs",
        "wrangledDataset",
        "creator",
        "updater",
        "workspace",
        "snapshot",
        r"jobs\.fileWriterJob\.writeSetting",
        r"wrangledDataset\.recipe",
    ]
)
EMBED = {
    "name": "embed",
    "in": "query",
    "description": "Comma-separated associations; anything else is 400 ValidationFailed.",
    "schema": {"type": "string", "pattern": f"^(({_ASSOCIATIONS})(,({_ASSOCIATIONS}))*)?$"},
}
FIELDS = {"name": "fields", "in": "query", "schema": {"type": "string"}}
INCLUDE_DELETED = {"name": "includeDeleted", "in": "query", "schema": {"type": "boolean"}}

JOB = {
    "type": "object",
    "required": ["id", "status", "jobType", "percentComplete", "createdAt", "updatedAt"],
    "properties": {
        "id": {"type": "integer"},
        "status": STATUS,
        "jobType": {"type": "string", "enum": ["wrangle", "filewriter", "profile"]},
        "sampleSize": {"type": "integer"},
        "percentComplete": {"type": "integer", "minimum": 0, "maximum": 100},
        "errorMessage": NULLABLE_STRING,
        "lastHeartbeatAt": NULLABLE_STRING,
        "createdAt": {"type": "string"},
        "updatedAt": {"type": "string"},
        "creator": REF,
        "jobGroup": REF,
        "executionLanguage": {"type": "string"},
        "writeSetting": {"type": "object", "properties": {"id": {"type": "integer"}}},
    },
}
JOB_GROUP = {
    "type": "object",
    "required": ["id"],  # fields=a;b may select fewer members
    "properties": {
        "id": {"type": "integer"},
        "status": STATUS,
        "ranfrom": {"type": ["string", "null"], "description": "null when run with ranfrom: null"},
        "ranfor": {"type": "string"},
        "profilingEnabled": {"type": "boolean"},
        "runParameterReferenceDate": {"type": "string"},
        "createdAt": {"type": "string"},
        "updatedAt": {"type": "string"},
        "wrangledDataset": REF,
        "creator": REF,
        "runParameters": {"type": "object"},
        "jobs": {"type": "object", "properties": {"data": {"type": "array", "items": JOB}}},
    },
}
JOB_GROUP_LIST = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "array", "items": JOB_GROUP}, "count": {"type": "integer"}},
}
PAGING = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
    },
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
    },
    {"name": "includeCount", "in": "query", "schema": {"type": "boolean"}},
    {
        "name": "sort",
        "in": "query",
        "schema": {"type": "string", "enum": ["createdAt", "-createdAt", "id", "-id"]},
    },
]
RUN_JOB_REQUEST = {
    "type": "object",
    "required": ["wrangledDataset"],
    "properties": {
        "wrangledDataset": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer", "enum": [1, 7, 33]}},
        },
        # override values are deliberately not validated (the v4 API documents them as
        # free-form): any object is accepted
        "overrides": {
            "type": ["object", "null"],
            "description": "execution, profiler, writesettings / writeSettings (list of objects)",
        },
        "runParameters": {
            "type": ["object", "null"],
            "properties": {
                "overrides": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["key", "value"],
                                "properties": {"key": {"type": "string"}, "value": {}},
                            },
                        }
                    },
                },
                "referenceDate": {"type": "string"},
            },
        },
        "ranfrom": {"type": ["string", "null"], "description": "ui, schedule or api"},
        "ignoreRecipeErrors": {"type": "boolean"},
        "forceCacheUpdate": {"type": "boolean"},
        "testMode": {"type": "boolean"},
    },
}
RUN_JOB_RESULT = {
    "type": "object",
    "required": ["sessionId", "reason", "jobGraph", "id", "jobs"],
    "properties": {
        "sessionId": {"type": "string", "format": "uuid"},
        "reason": {"type": "string", "enum": ["JobStarted"]},
        "jobGraph": {
            "type": "object",
            "required": ["vertices", "edges"],
            "properties": {
                "vertices": {"type": "array", "items": {"type": "integer"}},
                "edges": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "source": {"type": "integer"},
                            "target": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "id": {"type": "integer"},
        "jobs": {
            "type": "object",
            "properties": {"data": {"type": "array", "items": REF}},
        },
    },
}

RUN_FLOW_REQUEST = {
    "type": "object",
    "description": "Every member is optional; the body itself may be omitted.",
    "properties": {
        "runParameters": RUN_JOB_REQUEST["properties"]["runParameters"],  # type: ignore[index]
        "wrangledDatasetIds": {"type": "array", "items": {"type": "integer"}},
        "overrides": {
            "type": ["object", "null"],
            "description": "keyed by recipe name: {profiler, writesettings, execution}",
        },
        "execution": {"type": "string"},
        "ignoreRecipeErrors": {"type": "boolean"},
    },
}
RUN_FLOW_RESULT = {
    "type": "object",
    "required": ["flowRunId", "data"],
    "properties": {
        "flowRunId": {"type": "integer"},
        "data": {"type": "array", "items": RUN_JOB_RESULT},
    },
}
FLOW_RUN = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "integer"},
        "flow": REF,
        "status": STATUS,
        "createdAt": {"type": "string"},
        "updatedAt": {"type": "string"},
    },
}


def _flow_paths() -> dict[str, Any]:
    """runFlow and the flow-run reads."""
    return {
        "/v4/flows/{id}/run": {
            "post": {
                "operationId": "runFlow",
                "parameters": [
                    ID_PARAM,
                    {"name": "x-execution-id", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": RUN_FLOW_REQUEST}},
                },
                "responses": {
                    "201": _ok("One job group per recipe output started", RUN_FLOW_RESULT),
                    "304": {"description": "A flow run with this x-execution-id exists"},
                    **ERRORS,
                    "429": _error("runFlow quota reached"),
                },
            }
        },
        "/v4/flowRuns/{id}": {
            "get": {
                "operationId": "getFlowRun",
                "parameters": [ID_PARAM],
                "responses": {"200": _ok("A flow run", FLOW_RUN), **ERRORS},
            }
        },
        "/v4/flowRuns/{id}/status": {
            "get": {
                "operationId": "getFlowRunStatus",
                "parameters": [ID_PARAM],
                "responses": {"200": _ok("The status as a bare JSON string", STATUS), **ERRORS},
            }
        },
        "/v4/flowRuns/{id}/jobGroups": {
            "get": {
                "operationId": "getFlowRunJobGroups",
                "parameters": [ID_PARAM],
                "responses": {
                    "200": _ok(
                        "The flow run's job groups, in start order",
                        {
                            "type": "object",
                            "required": ["data"],
                            "properties": {
                                "data": {"type": "array", "items": JOB_GROUP},
                                "count": {"type": "integer"},
                            },
                        },
                    ),
                    **ERRORS,
                },
            }
        },
    }


PLAN_RUN = {
    "type": "object",
    "required": ["id", "plan", "status"],
    "properties": {
        "id": {"type": "integer"},
        "plan": REF,
        "status": STATUS,
        "createdAt": {"type": "string"},
        "updatedAt": {"type": "string"},
        "finishedAt": {"type": ["string", "null"]},
    },
}


def _plan_paths() -> dict[str, Any]:
    """runPlan and the plan-snapshot-run reads."""
    return {
        "/v4/plans/{id}/run": {
            "post": {
                "operationId": "runPlan",
                "parameters": [
                    ID_PARAM,
                    {"name": "x-execution-id", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "201": _ok(
                        "A plan snapshot run started",
                        {
                            "type": "object",
                            "required": ["planSnapshotRunId"],
                            "properties": {"planSnapshotRunId": {"type": "integer"}},
                        },
                    ),
                    "304": {"description": "A plan run with this x-execution-id exists"},
                    **ERRORS,
                    "429": _error("runPlan quota reached"),
                },
            }
        },
        "/v4/planSnapshotRuns": {
            "get": {
                "operationId": "listPlanSnapshotRuns",
                "parameters": PAGING[:2],
                "responses": {
                    "200": _ok(
                        "Plan snapshot runs, newest first",
                        {
                            "type": "object",
                            "required": ["data"],
                            "properties": {
                                "data": {"type": "array", "items": PLAN_RUN},
                                "count": {"type": "integer"},
                            },
                        },
                    ),
                    **ERRORS,
                },
            }
        },
        "/v4/planSnapshotRuns/{id}": {
            "get": {
                "operationId": "getPlanSnapshotRun",
                "parameters": [ID_PARAM],
                "responses": {"200": _ok("A plan snapshot run", PLAN_RUN), **ERRORS},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document; response codes list everything the emulator can answer without faults."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "sweeper Dataprep v4 emulator", "version": "1"},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["exception"],
                    "properties": {
                        "exception": {
                            "type": "object",
                            "required": ["name", "message", "details"],
                            "properties": {
                                "name": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
        "security": [{"bearer": []}, {"basic": []}],
        "paths": {
            "/v4/jobGroups": {
                "post": {
                    "operationId": "runJobGroup",
                    "parameters": [
                        {"name": "x-execution-id", "in": "header", "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": RUN_JOB_REQUEST}},
                    },
                    "responses": {
                        "201": _ok("Job group created", RUN_JOB_RESULT),
                        "304": {"description": "A job group with this x-execution-id exists"},
                        **ERRORS,
                        "429": _error("runJobGroup quota reached"),
                    },
                },
                "get": {
                    "operationId": "listJobGroups",
                    "parameters": [
                        EMBED,
                        FIELDS,
                        INCLUDE_DELETED,
                        *PAGING,
                    ],
                    "responses": {"200": _ok("Job groups", JOB_GROUP_LIST), **ERRORS},
                },
            },
            "/v4/jobLibrary": {
                "get": {
                    "operationId": "listJobLibrary",
                    "description": "The listing's job groups, newest first, with their jobs and "
                    "writeSettings embedded unless embed names others.",
                    "parameters": [
                        EMBED,
                        FIELDS,
                        INCLUDE_DELETED,
                        *PAGING,
                        *(
                            {
                                "name": f"dateFilter[{field}][{op}]",
                                "in": "query",
                                "description": "epoch milliseconds",
                                "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                            }
                            for field in ("createdAt", "updatedAt")
                            for op in ("gte", "lt")
                        ),
                        {
                            "name": "status",
                            "in": "query",
                            "description": "one status, or several separated by commas",
                            "schema": STATUS,
                        },
                        {
                            "name": "ranfrom",
                            "in": "query",
                            "description": "null selects groups run with ranfrom: null",
                            "schema": {"type": "string", "enum": ["ui", "schedule", "api", "null"]},
                        },
                        {
                            "name": "filter",
                            "in": "query",
                            "description": "a job group id, or part of the recipe's name",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "runBy",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["all", "currentUser"]},
                        },
                    ],
                    "responses": {"200": _ok("Job groups", JOB_GROUP_LIST), **ERRORS},
                }
            },
            "/v4/jobGroups/{id}": {
                "get": {
                    "operationId": "getJobGroup",
                    "parameters": [ID_PARAM, EMBED, FIELDS, INCLUDE_DELETED],
                    "responses": {"200": _ok("A job group", JOB_GROUP), **ERRORS},
                }
            },
            "/v4/jobGroups/{id}/status": {
                "get": {
                    "operationId": "getJobGroupStatus",
                    "parameters": [ID_PARAM],
                    "responses": {"200": _ok("The status as a bare JSON string", STATUS), **ERRORS},
                }
            },
            "/v4/jobGroups/{id}/jobs": {
                "get": {
                    "operationId": "getJobsForJobGroup",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _ok(
                            "Jobs in execution order",
                            {
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "data": {"type": "array", "items": JOB},
                                    "count": {"type": "integer"},
                                },
                            },
                        ),
                        **ERRORS,
                    },
                }
            },
            "/v4/jobGroups/{id}/cancel": {
                "post": {
                    "operationId": "cancelJobGroup",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _ok(
                            "Canceled jobs",
                            {
                                "type": "object",
                                "required": ["jobIds", "jobgroupId"],
                                "properties": {
                                    "jobIds": {"type": "array", "items": {"type": "integer"}},
                                    "jobgroupId": {"type": "integer"},
                                },
                            },
                        ),
                        **ERRORS,
                    },
                }
            },
            "/v4/jobGroups/{id}/outputs": {
                "get": {
                    "operationId": "getJobGroupOutputs",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _ok(
                            "Files written",
                            {
                                "type": "object",
                                "required": ["files", "tables"],
                                "properties": {
                                    "files": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["path"],
                                            "properties": {"path": {"type": "string"}},
                                        },
                                    },
                                    "tables": {"type": "array"},
                                },
                            },
                        ),
                        **ERRORS,
                    },
                }
            },
            "/v4/jobs/{id}/status": {
                "get": {
                    "operationId": "getJobStatus",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _ok("The job status as a bare JSON string", STATUS),
                        **ERRORS,
                    },
                }
            },
            **_flow_paths(),
            **_plan_paths(),
        },
    }


async def _serve_document(_: Request) -> Response:
    return JSONResponse(openapi_document())


def openapi_route() -> Route:
    return Route("/openapi.json", _serve_document, methods=["GET"], include_in_schema=False)
