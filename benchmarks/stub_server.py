"""A minimal POST /v4/jobGroups server for client-bound measurements (not an emulator).

    python benchmarks/stub_server.py --latency 0.1

The real emulator (uvicorn + Starlette + SQLite) spends a few ms of CPU on every POST, which caps it
at 130 to 200 POSTs/s on the 2-core benchmark machine (depending on load): below the Little's-law
bound of c = 32 at 100 ms, and at times of c = 16. This stub answers from a bare asyncio protocol
(hand-parsed HTTP/1.1, keep-alive) after ``--latency`` seconds, so the client side is what is
measured. It keeps the oracle routes the benchmarks read (``/_emulator/jobGroups``,
``/_emulator/stats``, ``/_emulator/reset``) and answers 304 to a repeated x-execution-id, like the
emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

STATUS = {200: "OK", 201: "Created", 304: "Not Modified", 400: "Bad Request", 404: "Not Found"}


class Store:
    def __init__(self) -> None:
        self.groups: list[dict[str, Any]] = []
        self.by_execution: dict[str, int] = {}
        self.posts = 0
        self.served_304 = 0
        self.next_id = 1

    def create(self, body: dict[str, Any], execution_id: str | None) -> tuple[int, Any]:
        if execution_id and execution_id in self.by_execution:
            self.served_304 += 1
            return 304, None
        data = (body.get("runParameters") or {}).get("overrides", {}).get("data", [])
        params = {str(d.get("key")): str(d.get("value")) for d in data if isinstance(d, dict)}
        group_id, job_id = self.next_id, self.next_id + 1
        self.next_id += 3
        self.groups.append({"id": group_id, "params": params, "createdAt": time.time()})
        if execution_id:
            self.by_execution[execution_id] = group_id
        jobs = [{"id": job_id}, {"id": job_id + 1}]
        return 201, {
            "sessionId": str(uuid.uuid4()),
            "reason": "JobStarted",
            "jobGraph": {"vertices": [job_id, job_id + 1], "edges": []},
            "id": group_id,
            "jobs": {"data": jobs},
        }


class Protocol(asyncio.Protocol):
    def __init__(self, store: Store, latency: float) -> None:
        self.store = store
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, str, dict[str, str], bytes]] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.worker = asyncio.ensure_future(self.serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.queue.put_nowait((method, target, headers, rest[:length]))

    async def serve(self) -> None:
        # HTTP/1.1 answers in request order on one connection; clients do not pipeline.
        while True:
            method, target, headers, body = await self.queue.get()
            status, payload = await self.handle(method, target.split("?")[0], headers, body)
            self.respond(status, payload)

    async def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        store = self.store
        if method == "POST" and path == "/v4/jobGroups":
            store.posts += 1
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            try:
                parsed = json.loads(body or b"{}")
            except ValueError:
                return 400, {"exception": {"name": "ValidationFailed", "message": "bad JSON"}}
            return store.create(parsed, headers.get("x-execution-id"))
        if method == "GET" and path == "/_emulator/jobGroups":
            return 200, {"data": store.groups, "count": len(store.groups)}
        if method == "GET" and path == "/_emulator/stats":
            return 200, {
                "posts_received": store.posts,
                "created": len(store.groups),
                "served_304": store.served_304,
                "served_429": 0,
            }
        if method == "POST" and path == "/_emulator/reset":
            self.store.__init__()  # type: ignore[misc]
            return 200, {"reset": True}
        return 404, {"exception": {"name": "NotFound", "message": f"{method} {path}"}}

    def respond(self, status: int, payload: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} {STATUS.get(status, 'OK')}\r\n"
        if status != 304:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write((head + "\r\n").encode("latin-1") + body)


async def main(host: str, port: int, latency: float) -> None:
    store = Store()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Protocol(store, latency), host, port)
    bound = server.sockets[0].getsockname()
    print(f"stub server listening on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before each 201")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port, args.latency))
