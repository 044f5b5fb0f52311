"""Build the API client a config asks for: the embedded emulator or a real base URL."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import httpx

from sweeper.auth import build_auth, build_verify
from sweeper.client import DataprepClient
from sweeper.config import EMBEDDED_STATE, SweepConfig

EMBEDDED_BASE_URL = "http://embedded.emulator"
def embedded_transport(
    state_path: Path = EMBEDDED_STATE,
    *,
    output_root: Path | None = None,
    protected: tuple[Path, ...] = (),
) -> httpx.AsyncBaseTransport:
    """An in-process transport to the emulator, its state kept in SQLite across runs.

    Outputs land under ``output_root`` (default: the working directory), where a relative
    writeSettings path such as ``results/out/...`` points; none may land on ``protected``.
    """
    from sweeper.emulator import EmulatorSettings, create_app

    state_path.parent.mkdir(parents=True, exist_ok=True)
    settings = EmulatorSettings(
        state_path=state_path,
        output_root=output_root if output_root is not None else Path.cwd(),
        protected_paths=protected,
    )
    return httpx.ASGITransport(app=create_app(settings))


def connect(
    config: SweepConfig,
    *,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DataprepClient:
    """A DataprepClient for ``config.api``; raises ConfigError for missing or unsafe credentials."""
    env = os.environ if environ is None else environ
    api = config.api
    auth = build_auth(api, env, config_path=config.path)
    if api.embedded:
        return DataprepClient(
            EMBEDDED_BASE_URL,
            auth=auth,
            transport=transport
            or embedded_transport(
                config.embedded_state, output_root=config.root, protected=config.owned_paths
            ),
            timeout=api.timeout,
        )
    return DataprepClient(
        api.base_url,
        auth=auth,
        transport=transport,
        timeout=api.timeout,
        verify=build_verify(api),
        max_connections=max(10, config.run.concurrency),
    )
