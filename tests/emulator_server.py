"""Run the real emulator (uvicorn on 127.0.0.1, a free port) for a test, and always stop it.

    from tests.emulator_server import running_emulator

    with running_emulator(EmulatorSettings(output_root=tmp_path)) as base_url:
        httpx.post(f"{base_url}/v4/jobGroups", ...)

The server runs in a background thread of the test process (light and fast; the state is reachable
through /_emulator/ or a shared state file). On exit it is asked to stop, joined for `stop_timeout`
seconds, then forced; a server that does not come up within `start_timeout` raises RuntimeError.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from sweeper.emulator import EmulatorSettings
from sweeper.emulator.serve import base_url, build_server


@contextmanager
def running_emulator(
    settings: EmulatorSettings | None = None,
    *,
    start_timeout: float = 10.0,
    stop_timeout: float = 5.0,
) -> Iterator[str]:
    """Yield the base URL (e.g. http://127.0.0.1:54321) of a running emulator."""
    server = build_server(settings or EmulatorSettings(), host="127.0.0.1", port=0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="emulator-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError(f"The emulator server failed to start: {errors[:1]!r}.")
            if time.monotonic() > deadline:
                raise RuntimeError(f"The emulator server did not start within {start_timeout} s.")
            time.sleep(0.01)
        yield base_url(server)
    finally:
        server.should_exit = True
        thread.join(stop_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(stop_timeout)


class FakeClock:
    """An injectable wall clock for EmulatorSettings(clock=...): advance it instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def asgi_client(app: object, token: str | None = "test-token") -> httpx.AsyncClient:
    """An httpx client talking to the app in-process (ASGITransport), with a Bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://emulator", headers=headers)


# The seed document's request body with overrides and run parameters (https://cloud.google.com/dataprep/docs/html/API-JobGroups-Create-v4_145281446).
SEED_OVERRIDES_AND_PARAMETERS = {
    "wrangledDataset": {"id": 33},
    "overrides": {
        "execution": "photon",
        "profiler": False,
        "writesettings": [
            {
                "path": "gs://bucket/out/run_02.csv",
                "action": "create",
                "format": "csv",
                "compression": "none",
                "header": True,
                "asSingleFile": True,
            }
        ],
    },
    "runParameters": {"overrides": {"data": [{"key": "Region", "value": "02"}]}},
}
