"""The emulator answers as its own OpenAPI document says (schemathesis over ASGI, bounded)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from sweeper.emulator import EmulatorSettings, create_app

_OUTPUT = Path(tempfile.mkdtemp(prefix="emulator-openapi-"))
atexit.register(shutil.rmtree, _OUTPUT, ignore_errors=True)
APP = create_app(
    EmulatorSettings(
        output_root=_OUTPUT, token="schemathesis", quota_user_per_min=0, quota_workspace_per_min=0
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def test_openapi_document_lists_the_v4_surface() -> None:
    paths = schema.raw_schema["paths"]
    assert {
        "/v4/jobGroups",
        "/v4/jobGroups/{id}",
        "/v4/jobGroups/{id}/status",
        "/v4/jobGroups/{id}/jobs",
        "/v4/jobGroups/{id}/cancel",
        "/v4/jobGroups/{id}/outputs",
        "/v4/jobLibrary",
        "/v4/flows/{id}/run",
        "/v4/flowRuns/{id}",
        "/v4/flowRuns/{id}/status",
        "/v4/flowRuns/{id}/jobGroups",
        "/v4/plans/{id}/run",
        "/v4/planSnapshotRuns",
        "/v4/planSnapshotRuns/{id}",
    } <= set(paths)
    assert schema.raw_schema["openapi"].startswith("3.")


@schema.parametrize()
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_app_conforms_to_its_openapi_document(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers={"Authorization": "Bearer schemathesis"})
