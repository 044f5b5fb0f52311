"""Async client for the Dataprep / Trifacta / Alteryx v4 job-group API.

This is the only module that touches httpx exceptions: every transport error and every non-2xx
answer is translated, in ``_translate`` and ``_raise_for_status``, into a
``sweeper.errors.ApiError`` subclass whose ``failure`` says whether a resend is safe. The client
never retries; ``sweeper.retry.call_with_retry`` does, by failure class.

Connections are httpx's own (httpcore): proxies from the environment, keep-alive, TLS and the
checks that keep a dead idle connection from being reused are httpx's, not ours.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, NoReturn

import httpx

from sweeper.errors import (
    ApiConnectionError,
    ApiError,
    ApiInDoubtError,
    ApiRejectedError,
    ApiResponseError,
    AuthError,
    RateLimitedError,
)
from sweeper.ledger import one_line
from sweeper.redact import redact
from sweeper.retry import parse_retry_after

log = logging.getLogger("sweeper.client")

JOB_GROUPS = "v4/jobGroups"
JOB_LIBRARY = "v4/jobLibrary"  # replaces the deprecated GET /v4/jobGroups listing
TERMINAL_STATUSES = frozenset({"Complete", "Failed", "Canceled"})
RETRY_AFTER_CAP = 300.0  # seconds; a server asking for longer is capped
_DETAIL_CHARS = 300  # server error text is attacker-influenced: one line, bounded
_JOB_ERROR_CHARS = 500
_JSON_HEADERS = {"Accept": "application/json"}


# API answers are small JSON documents; a bigger one is not the API, and is not read past this.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


def _masked(text: object, limit: int) -> str:
    """``text`` as one line with secrets masked, cut to ``limit`` characters."""
    # Mask before cutting, so a secret cut in half cannot escape the pattern.
    return one_line(redact(str(text)), limit)


# --- result types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """Outcome of one POST /v4/jobGroups that the server answered 201 (or another 2xx) or 304."""

    status_code: int
    job_group_id: int | None  # None on 304 (no body)
    session_id: str  # "" on 304
    job_ids: tuple[int, ...]  # in execution order (jobs.data order)
    request_id: str  # x-trifacta-request-id ("" if absent)

    @property
    def duplicate(self) -> bool:
        """The server already had a job group for this x-execution-id."""
        return self.status_code == 304


@dataclass(frozen=True)
class JobState:
    id: int
    job_type: str
    status: str
    percent_complete: int
    error: str  # one line, <= 500 chars, "" if none


@dataclass(frozen=True)
class JobGroupState:
    id: int
    status: str
    dataset_id: int | None
    created_at: str
    updated_at: str
    jobs: tuple[JobState, ...]  # when embedded
    run_parameters: Mapping[str, str] | None  # when the server returns them
    output_paths: tuple[str, ...]  # filewriter writeSetting paths when embedded

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def error(self) -> str:
        """The first failed job's error (one line), or "" if no job failed."""
        for job in self.jobs:
            if job.status == "Failed" and job.error:
                return job.error
        for job in self.jobs:
            if job.status == "Failed":
                return f"{job.job_type or 'job'} job {job.id} failed"
        return ""


@dataclass(frozen=True)
class _Answer:
    """One response as read: status, headers and at most MAX_ANSWER_BYTES of decoded body."""

    method: str
    path: str  # for messages: no query, no host
    status_code: int
    headers: httpx.Headers
    content: bytes
    oversized: bool  # the body went on past MAX_ANSWER_BYTES (content holds its start)


async def _read_answer(response: httpx.Response, method: str, path: str) -> _Answer:
    """Read the (decompressed) body of a streamed response, stopping past MAX_ANSWER_BYTES."""
    chunks: list[bytes] = []
    size = 0
    oversized = False
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            oversized = True
            break
    content = b"".join(chunks)[:MAX_ANSWER_BYTES]
    return _Answer(method, path, response.status_code, response.headers, content, oversized)


def _loads(content: bytes) -> Any:
    """json.loads that reports nesting too deep for Python's stack as malformed JSON."""
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


@dataclass(frozen=True)
class FlowSubmission:
    """Outcome of one POST /v4/flows/{id}/run answered 201 (or another 2xx) or 304."""

    status_code: int
    flow_run_id: int | None  # None on 304 (no body)
    job_group_ids: tuple[int, ...]  # every job group the run started, in the answer's order
    session_id: str  # the first group's ("" on 304)
    job_ids: tuple[int, ...]  # the jobs of every group, group by group
    request_id: str

    @property
    def job_group_id(self) -> int | None:
        """The first job group (what a recipe sweep's column holds); None on 304."""
        return self.job_group_ids[0] if self.job_group_ids else None


# --- error translation (the one place) ----------------------------------------------------------


def _request_id(answer: _Answer) -> str:
    return str(answer.headers.get("x-trifacta-request-id", ""))


def _envelope(answer: _Answer) -> tuple[str | None, str]:
    """(exception name, one-line text) from the ``{"exception": {...}}`` envelope or raw body."""
    try:
        body: Any = _loads(answer.content) if answer.content else None
    except (ValueError, UnicodeDecodeError):
        body = None
    exc = body.get("exception") if isinstance(body, dict) else None
    if isinstance(exc, dict):
        name = exc.get("name")
        parts = []
        for key in ("message", "details"):
            value = exc.get(key)
            if value in (None, ""):
                continue
            parts.append(value if isinstance(value, str) else json.dumps(value, default=str))
        return (str(name) if name else None), _masked(" - ".join(parts), _DETAIL_CHARS)
    if body is None and answer.content:
        text = answer.content[: _DETAIL_CHARS * 4].decode("utf-8", errors="replace")
        return None, _masked(text, _DETAIL_CHARS)
    return None, ""


def _raise_for_status(answer: _Answer) -> None:
    """Raise the ApiError matching a non-2xx, non-304 answer."""
    code = answer.status_code
    if 200 <= code < 300 or code == 304:
        return
    name, text = _envelope(answer)
    request_id = _request_id(answer)
    what = f"{answer.method} {answer.path} was answered {code}"
    if name:
        what += f" {name}"
    if text:
        what += f": {text}"
    ref = f" (request id {request_id})" if request_id else ""
    what = what.rstrip(".") + ref + "."
    meta: dict[str, Any] = {"status_code": code, "name": name, "request_id": request_id or None}
    if code in (429, 503):
        waits = [
            parse_retry_after(answer.headers.get(h), cap=RETRY_AFTER_CAP)
            for h in ("x-retry-after", "retry-after")
        ]
        retry_after = max((w for w in waits if w is not None), default=None)
        hint = f" The server asked to wait {retry_after:g} s." if retry_after is not None else ""
        raise RateLimitedError(
            f"{what} The request was refused before processing (rate limit or overload) "
            f"and can be sent again later.{hint}",
            retry_after=retry_after,
            **meta,
        )
    if code in (401, 403):
        advice = (
            "The access token was refused: check that it is valid and not expired, then resume."
            if code == 401
            else "The credentials lack permission for this resource: check the token's "
            "workspace and role, then resume."
        )
        raise AuthError(f"{what} {advice}", **meta)
    if code >= 500:
        raise ApiInDoubtError(
            f"{what} The server failed and may or may not have acted on the request; "
            "it is safe to resend only with the same x-execution-id.",
            **meta,
        )
    if 300 <= code < 400:
        location = httpx.URL(answer.headers.get("location", "")).path or "?"
        raise ApiRejectedError(
            f"{what} The API redirected to {location}: set api.base_url to the final URL.",
            **meta,
        )
    raise ApiRejectedError(
        f"{what} The server refused the request; sending it again will not help.", **meta
    )


def _describe(exc: Exception) -> str:
    """Exception class plus its (masked, one-line) text; httpx puts no headers in these."""
    text = _masked(str(exc), 200)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _translate(method: str, path: str) -> Iterator[None]:
    """Map httpx transport errors to ApiError subclasses by whether the request may have arrived."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError) as exc:
        raise ApiConnectionError(
            f"{method} {path} could not reach the server ({_describe(exc)}); the request "
            "was not sent. Check api.base_url and the network; it is safe to retry."
        ) from None
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        raise ApiRejectedError(
            f"{method} {path} could not be sent ({type(exc).__name__}); check api.base_url."
        ) from None
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        # ReadTimeout, WriteTimeout, ReadError, WriteError, CloseError, server disconnected.
        raise ApiInDoubtError(
            f"{method} {path} got no complete answer ({type(exc).__name__}); the server may "
            "have acted on it. Resend only with the same x-execution-id, or look it up."
        ) from None
    except httpx.HTTPError as exc:  # decoding errors, too many redirects, anything newer
        raise ApiInDoubtError(
            f"{method} {path} failed ({type(exc).__name__}); the outcome is unknown."
        ) from None


# --- response parsing ---------------------------------------------------------------------------


def _bad_shape(answer: _Answer, what: str) -> NoReturn:
    """Raise for a 2xx answer sweeper cannot use: in doubt for a POST, which may have acted."""
    request_id = _request_id(answer)
    ref = f" (request id {request_id})" if request_id else ""
    said = f"{answer.method} {answer.path} answered {answer.status_code} but {what}{ref}"
    meta: dict[str, Any] = {"status_code": answer.status_code, "request_id": request_id or None}
    if answer.method == "POST":
        raise ApiInDoubtError(
            f"{said}; the server may have acted on it. Resend only with the same "
            "x-execution-id, or look it up.",
            **meta,
        )
    raise ApiResponseError(
        f"{said}; the server does not follow the documented v4 API. Check api.base_url.", **meta
    )


def _json(answer: _Answer) -> Any:
    if answer.oversized:
        _bad_shape(answer, f"the body is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MB")
    try:
        return _loads(answer.content)
    except (ValueError, UnicodeDecodeError):
        _bad_shape(answer, "the body is not JSON (or nests too deeply)")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _ref_id(value: Any) -> int | None:
    """An ``{"id": N}`` reference (or a bare id) -> N."""
    if isinstance(value, dict):
        return _int(value.get("id"))
    return _int(value)


def _data_list(value: Any) -> list[Any] | None:
    """``{"data": [...]}`` or a bare list -> the list; None if neither."""
    if isinstance(value, dict):
        value = value.get("data")
    return value if isinstance(value, list) else None


def _error_text(value: Any) -> str:
    if value in (None, "", {}):
        return ""
    if isinstance(value, dict):
        parts = [value.get(k) for k in ("name", "message", "details", "errorMessage")]
        text = " - ".join(str(p) for p in parts if p)
        value = text or json.dumps(value, default=str)
    return _masked(str(value), _JOB_ERROR_CHARS)


def _parse_job(item: Any) -> JobState | None:
    if not isinstance(item, dict):
        return None
    job_id = _int(item.get("id"))
    if job_id is None:
        return None
    percent = item.get("percentComplete")
    return JobState(
        id=job_id,
        job_type=str(item.get("jobType") or ""),
        status=str(item.get("status") or ""),
        percent_complete=int(percent) if isinstance(percent, (int, float)) else 0,
        error=_error_text(item.get("errorMessage")),
    )


def _write_path(job: Any) -> str | None:
    """writeSetting.path of an embedded filewriter job (either embedding shape)."""
    if not isinstance(job, dict):
        return None
    for holder in (job, job.get("fileWriterJob")):
        if isinstance(holder, dict):
            setting = holder.get("writeSetting")
            if isinstance(setting, dict) and isinstance(setting.get("path"), str):
                return str(setting["path"])
    return None


def _run_parameters(value: Any) -> dict[str, str] | None:
    """The group's run parameters in any of the shapes seen: request shape, list, or mapping."""
    if value is None:
        return None
    if isinstance(value, dict) and "overrides" in value:
        value = value["overrides"]
    if isinstance(value, dict) and "data" in value:
        value = value["data"]
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            if isinstance(item, dict) and "key" in item:
                out[str(item["key"])] = str(item.get("value", ""))
        return out
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return None


def _parse_group(item: Any) -> JobGroupState | None:
    if not isinstance(item, dict):
        return None
    group_id = _int(item.get("id"))
    if group_id is None:
        return None
    raw_jobs = _data_list(item.get("jobs")) or []
    jobs = tuple(j for j in (_parse_job(x) for x in raw_jobs) if j is not None)
    paths = tuple(p for p in (_write_path(x) for x in raw_jobs) if p)
    return JobGroupState(
        id=group_id,
        status=str(item.get("status") or ""),
        dataset_id=_ref_id(item.get("wrangledDataset")),
        created_at=str(item.get("createdAt") or ""),
        updated_at=str(item.get("updatedAt") or ""),
        jobs=jobs,
        run_parameters=_run_parameters(item.get("runParameters")),
        output_paths=paths,
    )


def _timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as the job library's dateFilter wants (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _older(created_at: str, bound: str) -> bool:
    """True when ``created_at`` is before ``bound`` (ISO-8601; falls back to text order)."""
    a, b = _timestamp(created_at), _timestamp(bound)
    if a is not None and b is not None:
        try:
            return a < b
        except TypeError:  # naive vs aware: compare as text
            pass
    return bool(created_at) and created_at < bound


def _matches(
    group: JobGroupState,
    dataset_id: int,
    run_parameters: Mapping[str, str],
    output_paths: Sequence[str],
) -> bool:
    if group.dataset_id != dataset_id:
        return False
    if group.run_parameters is not None:
        return all(group.run_parameters.get(k) == v for k, v in run_parameters.items())
    if output_paths and group.output_paths:
        return set(output_paths) <= set(group.output_paths)
    return False  # nothing we sent is visible: matching on the dataset alone is unsafe


# --- the client ---------------------------------------------------------------------------------


class DataprepClient:
    """Async client for POST/GET /v4/jobGroups and GET /v4/jobLibrary; an async context manager.

    ``max_connections`` is the most requests the caller will have in flight at once (and the most
    idle connections kept). Without ``transport``, httpx builds its own
    (``httpx.AsyncHTTPTransport``) with these limits and ``verify``, and honours proxies from the
    environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) as httpx
    documents; ``transport`` replaces it (the embedded emulator, tests), proxies included.
    ``timeout`` applies to connect, read and write; waiting for a pooled connection is not
    timed, since the caller bounds concurrency.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 10,
    ) -> None:
        self.base_url = str(base_url).rstrip("/") + "/"
        # Whether GET /v4/jobLibrary exists here: None until asked, False after a 404 (older
        # on-prem releases), after which recent_job_groups() uses the deprecated listing.
        self.job_library: bool | None = None
        self._path_prefix = httpx.URL(self.base_url).path.rstrip("/") + "/"
        # With transport=None httpx builds AsyncHTTPTransport itself, plus one per proxy found in
        # the environment; passing one of our own would switch the proxy lookup off.
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            transport=transport,
            timeout=httpx.Timeout(timeout, pool=None),
            verify=verify,
            limits=httpx.Limits(
                max_connections=max(1, max_connections),
                max_keepalive_connections=max(1, max_connections),
                keepalive_expiry=5.0,
            ),
            trust_env=True,
            follow_redirects=False,
            headers=_JSON_HEADERS,
        )

    async def __aenter__(self) -> DataprepClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """One request; returns a 2xx/304 answer or raises the matching ApiError."""
        url_path = self._path_prefix + path  # for messages: no query, no host
        send_headers = dict(headers or {})
        if body is not None:
            send_headers["Content-Type"] = "application/json"
        request = self._client.build_request(
            method,
            path,
            params=params,
            content=json.dumps(body).encode("utf-8") if body is not None else None,
            headers=send_headers,
        )
        try:
            with _translate(method, url_path):
                # Streamed, so that an endless or huge body is cut at MAX_ANSWER_BYTES.
                response = await self._client.send(request, stream=True)
                try:
                    answer = await _read_answer(response, method, url_path)
                finally:
                    await response.aclose()
        except ApiError as exc:
            log.debug("%s %s -> %s", method, url_path, type(exc).__name__)
            raise
        log.debug(
            "%s %s -> %s (request id %s)",
            method,
            url_path,
            answer.status_code,
            _request_id(answer) or "-",
        )
        _raise_for_status(answer)
        return answer

    async def create_job_group(self, body: Mapping[str, Any], *, execution_id: str) -> Submission:
        """POST /v4/jobGroups with ``x-execution-id``; 201 -> ids, 304 -> duplicate (no body)."""
        if not execution_id:
            raise ValueError("create_job_group needs an execution id (x-execution-id)")
        answer = await self._send(
            "POST", JOB_GROUPS, body=dict(body), headers={"x-execution-id": execution_id}
        )
        request_id = _request_id(answer)
        if answer.status_code == 304:
            return Submission(304, None, "", (), request_id)
        payload = _json(answer)
        if not isinstance(payload, dict):
            _bad_shape(answer, "the body is not a JSON object")
        group_id = _int(payload.get("id"))
        if group_id is None:
            group_id = _int(payload.get("jobgroupId"))  # v3-era servers
        if group_id is None:
            _bad_shape(answer, "the body has no job group id")
        raw_jobs = _data_list(payload.get("jobs")) or []
        job_ids = tuple(j for j in (_ref_id(x) for x in raw_jobs) if j is not None)
        session = payload.get("sessionId")
        return Submission(
            status_code=answer.status_code,
            job_group_id=group_id,
            session_id=str(session) if session else "",
            job_ids=job_ids,
            request_id=request_id,
        )

    async def get_job_group(
        self, job_group_id: int, *, embed: str = "jobs,wrangledDataset"
    ) -> JobGroupState:
        """GET /v4/jobGroups/{id} with its jobs embedded (one request)."""
        path = f"{JOB_GROUPS}/{int(job_group_id)}"
        answer = await self._send("GET", path, params={"embed": embed} if embed else None)
        group = _parse_group(_json(answer))
        if group is None:
            _bad_shape(answer, "the body is not a job group")
        return group

    async def get_jobs(self, job_group_id: int) -> tuple[JobState, ...]:
        """GET /v4/jobGroups/{id}/jobs, in the server's (execution) order."""
        path = f"{JOB_GROUPS}/{int(job_group_id)}/jobs"
        answer = await self._send("GET", path)
        items = _data_list(_json(answer))
        if items is None:
            _bad_shape(answer, "the body has no data list")
        return tuple(j for j in (_parse_job(x) for x in items) if j is not None)

    async def get_status(self, job_group_id: int) -> str:
        """GET /v4/jobGroups/{id}/status: a bare JSON string such as "Complete"."""
        path = f"{JOB_GROUPS}/{int(job_group_id)}/status"
        answer = await self._send("GET", path)
        status = _json(answer)
        if not isinstance(status, str):
            _bad_shape(answer, "the body is not a status string")
        return status

    async def cancel_job_group(
        self, job_group_id: int, *, execution_id: str | None = None
    ) -> tuple[int, ...]:
        """POST /v4/jobGroups/{id}/cancel -> the ids of the jobs it canceled (no-op when done).

        Cancel is idempotent on the server, so ``x-execution-id`` is sent only when given.
        """
        path = f"{JOB_GROUPS}/{int(job_group_id)}/cancel"
        headers = {"x-execution-id": execution_id} if execution_id else None
        answer = await self._send("POST", path, body={}, headers=headers)
        if not answer.content:
            return ()
        payload = _json(answer)
        ids = payload.get("jobIds") if isinstance(payload, dict) else None
        if ids is None:
            return ()
        if not isinstance(ids, list):
            _bad_shape(answer, "jobIds is not a list")
        return tuple(i for i in (_int(x) for x in ids) if i is not None)

    async def list_job_groups(
        self,
        *,
        limit: int = 25,
        offset: int = 0,
        sort: str = "-createdAt",
        embed: str = "jobs.fileWriterJob.writeSetting",
    ) -> list[JobGroupState]:
        """GET /v4/jobGroups (one page, newest first by default)."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset, "sort": sort}
        if embed:
            params["embed"] = embed
        answer = await self._send("GET", JOB_GROUPS, params=params)
        items = _data_list(_json(answer))
        if items is None:
            _bad_shape(answer, "the body has no data list")
        return [g for g in (_parse_group(x) for x in items) if g is not None]

    async def list_job_library(
        self,
        *,
        limit: int = 25,
        offset: int = 0,
        sort: str = "-createdAt",
        created_since: datetime | None = None,
        status: str | None = None,
        ranfrom: str | None = None,
        text: str | None = None,
        run_by: str | None = None,
    ) -> list[JobGroupState]:
        """GET /v4/jobLibrary (one page); ``created_since`` becomes dateFilter[createdAt][gte]."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset, "sort": sort}
        if created_since is not None:
            params["dateFilter[createdAt][gte]"] = _epoch_ms(created_since)
        for name, value in (("status", status), ("ranfrom", ranfrom), ("filter", text)):
            if value is not None:
                params[name] = value
        if run_by is not None:
            params["runBy"] = run_by
        answer = await self._send("GET", JOB_LIBRARY, params=params)
        items = _data_list(_json(answer))
        if items is None:
            _bad_shape(answer, "the body has no data list")
        return [g for g in (_parse_group(x) for x in items) if g is not None]

    async def recent_job_groups(
        self, *, limit: int = 25, offset: int = 0, created_since: datetime | None = None
    ) -> list[JobGroupState]:
        """One page of job groups, newest first: the job library, or the listing where it is 404.

        The listing cannot filter by date, so its page may hold groups older than
        ``created_since``; callers skip them.
        """
        if self.job_library is not False:
            try:
                groups = await self.list_job_library(
                    limit=limit, offset=offset, created_since=created_since
                )
            except ApiRejectedError as exc:
                if exc.status_code != 404:
                    raise
                log.info("GET /v4/jobLibrary is not served here (404): using GET /v4/jobGroups")
                self.job_library = False
            else:
                self.job_library = True
                return groups
        return await self.list_job_groups(limit=limit, offset=offset)

    async def find_job_group(
        self,
        *,
        dataset_id: int,
        run_parameters: Mapping[str, str],
        output_paths: Sequence[str] = (),
        created_after: str | None = None,
        max_pages: int = 20,
        page_size: int = 25,
    ) -> JobGroupState | None:
        """Reconciliation lookup: the newest job group matching what a lost POST would have made.

        Pages through the newest groups (the job library narrowed to ``created_after``, else the
        listing) until one is older than ``created_after`` (or a short page, or ``max_pages``). A
        group matches on dataset id plus the run parameters when the server returns them, else
        plus the writeSetting paths. None when nothing matches.
        """
        since = _timestamp(created_after) if created_after is not None else None
        for page in range(max_pages):
            groups = await self.recent_job_groups(
                limit=page_size, offset=page * page_size, created_since=since
            )
            for group in groups:
                if created_after is not None and _older(group.created_at, created_after):
                    return None
                if _matches(group, dataset_id, run_parameters, output_paths):
                    return group
            if len(groups) < page_size:
                return None
        return None

    async def get_outputs(self, job_group_id: int) -> tuple[str, ...]:
        """GET /v4/jobGroups/{id}/outputs -> files[].path."""
        path = f"{JOB_GROUPS}/{int(job_group_id)}/outputs"
        answer = await self._send("GET", path)
        payload = _json(answer)
        files = payload.get("files") if isinstance(payload, dict) else None
        if not isinstance(files, list):
            _bad_shape(answer, "the body has no files list")
        out: list[str] = []
        for item in files:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("path"), str):
                out.append(item["path"])
        return tuple(out)

    # --- flows (POST /v4/flows/{id}/run and the flow-run reads) ---------------------------------

    async def run_flow(
        self, flow_id: int, body: Mapping[str, Any], *, execution_id: str
    ) -> FlowSubmission:
        """POST /v4/flows/{id}/run with ``x-execution-id``; 201 -> the run's ids, 304 -> none."""
        if not execution_id:
            raise ValueError("run_flow needs an execution id (x-execution-id)")
        path = f"v4/flows/{int(flow_id)}/run"
        answer = await self._send(
            "POST", path, body=dict(body), headers={"x-execution-id": execution_id}
        )
        request_id = _request_id(answer)
        if answer.status_code == 304:
            return FlowSubmission(304, None, (), "", (), request_id)
        payload = _json(answer)
        if not isinstance(payload, dict):
            _bad_shape(answer, "the body is not a JSON object")
        run_id = _int(payload.get("flowRunId"))
        items = _data_list(payload)
        if run_id is None or items is None:
            _bad_shape(answer, "the body has no flowRunId or no data list")
        groups = [g for g in items if isinstance(g, dict) and _int(g.get("id")) is not None]
        job_ids = tuple(
            j
            for g in groups
            for j in (_ref_id(x) for x in (_data_list(g.get("jobs")) or []))
            if j is not None
        )
        session = groups[0].get("sessionId") if groups else ""
        return FlowSubmission(
            status_code=answer.status_code,
            flow_run_id=run_id,
            job_group_ids=tuple(int(g["id"]) for g in groups),
            session_id=str(session) if session else "",
            job_ids=job_ids,
            request_id=request_id,
        )

    async def get_flow_run_status(self, flow_run_id: int) -> str:
        """GET /v4/flowRuns/{id}/status: a bare JSON string (an unknown value means running)."""
        answer = await self._send("GET", f"v4/flowRuns/{int(flow_run_id)}/status")
        status = _json(answer)
        if not isinstance(status, str):
            _bad_shape(answer, "the body is not a status string")
        return status

    async def get_flow_run_job_groups(self, flow_run_id: int) -> list[JobGroupState]:
        """GET /v4/flowRuns/{id}/jobGroups: the run's job groups (with jobs when embedded)."""
        path = f"v4/flowRuns/{int(flow_run_id)}/jobGroups"
        answer = await self._send("GET", path, params={"embed": "jobs"})
        items = _data_list(_json(answer))
        if items is None:
            _bad_shape(answer, "the body has no data list")
        return [g for g in (_parse_group(x) for x in items) if g is not None]

    async def get_flow_run_flow_id(self, flow_run_id: int) -> int | None:
        """GET /v4/flowRuns/{id} -> the id of the flow it ran (None when not given)."""
        answer = await self._send("GET", f"v4/flowRuns/{int(flow_run_id)}")
        payload = _json(answer)
        return _ref_id(payload.get("flow")) if isinstance(payload, dict) else None

    async def find_flow_run(
        self,
        *,
        flow_id: int,
        run_parameters: Mapping[str, str],
        output_paths: Sequence[str] = (),
        outputs: Sequence[int] = (),
        created_after: str | None = None,
        max_pages: int = 20,
        page_size: int = 25,
    ) -> int | None:
        """Reconciliation lookup for a flow: the flow run of the newest job group that matches
        what the lost POST would have started (run parameters, else output paths; a recipe in
        ``outputs`` when given), confirmed to be a run of ``flow_id``. None when nothing matches.
        """
        params: dict[str, str | int] = {
            "limit": page_size,
            "sort": "-createdAt",
            "embed": "jobs.fileWriterJob.writeSetting",
        }
        checked: set[int] = set()
        for page in range(max_pages):
            params["offset"] = page * page_size
            answer = await self._send("GET", JOB_GROUPS, params=params)
            items = _data_list(_json(answer))
            if items is None:
                _bad_shape(answer, "the body has no data list")
            for item in items:
                group = _parse_group(item)
                run_id = _ref_id(item.get("flowRun")) if isinstance(item, dict) else None
                if group is None:
                    continue
                if created_after is not None and _older(group.created_at, created_after):
                    return None
                if run_id is None or run_id in checked or group.dataset_id is None:
                    continue
                if outputs and group.dataset_id not in outputs:
                    continue
                if not _matches(group, group.dataset_id, run_parameters, output_paths):
                    continue
                checked.add(run_id)
                if await self.get_flow_run_flow_id(run_id) in (flow_id, None):
                    return run_id
            if len(items) < page_size:
                return None
        return None

    # --- plans (POST /v4/plans/{id}/run and the plan snapshot run reads) -----------------------

    async def run_plan(
        self, plan_id: int, body: Mapping[str, Any], *, execution_id: str
    ) -> FlowSubmission:
        """POST /v4/plans/{id}/run with ``x-execution-id``; 201 -> the planSnapshotRunId (in
        ``flow_run_id``: the ledger's run id column), 304 -> none."""
        if not execution_id:
            raise ValueError("run_plan needs an execution id (x-execution-id)")
        path = f"v4/plans/{int(plan_id)}/run"
        answer = await self._send(
            "POST", path, body=dict(body), headers={"x-execution-id": execution_id}
        )
        request_id = _request_id(answer)
        if answer.status_code == 304:
            return FlowSubmission(304, None, (), "", (), request_id)
        payload = _json(answer)
        run_id = _int(payload.get("planSnapshotRunId")) if isinstance(payload, dict) else None
        if run_id is None:
            _bad_shape(answer, "the body has no planSnapshotRunId")
        return FlowSubmission(answer.status_code, run_id, (), "", (), request_id)

    async def get_plan_run_status(self, plan_run_id: int) -> str:
        """GET /v4/planSnapshotRuns/{id} -> its status (an unknown value means running)."""
        answer = await self._send("GET", f"v4/planSnapshotRuns/{int(plan_run_id)}")
        payload = _json(answer)
        status = payload.get("status") if isinstance(payload, dict) else None
        if not isinstance(status, str):
            _bad_shape(answer, "the body has no status string")
        return status

    async def find_plan_run(
        self,
        *,
        plan_id: int,
        created_after: str,
        known: Collection[int] = (),
        max_pages: int = 20,
        page_size: int = 25,
    ) -> int | None:
        """Reconciliation lookup for a plan: the one run of ``plan_id`` created since
        ``created_after`` that no other combination holds (``known``). A plan run carries no
        run parameters to match on, so two or more candidates are ambiguous: None, as is none.
        """
        found: list[int] = []
        params: dict[str, str | int] = {"limit": page_size, "sort": "-createdAt"}
        for page in range(max_pages):
            params["offset"] = page * page_size
            answer = await self._send("GET", "v4/planSnapshotRuns", params=params)
            items = _data_list(_json(answer))
            if items is None:
                _bad_shape(answer, "the body has no data list")
            for item in items:
                if not isinstance(item, dict):
                    continue
                run_id, created = _int(item.get("id")), item.get("createdAt")
                if run_id is None or not isinstance(created, str):
                    continue
                if _older(created, created_after):
                    return found[0] if len(found) == 1 else None
                if _ref_id(item.get("plan")) == plan_id and run_id not in known:
                    found.append(run_id)
            if len(items) < page_size:
                break
        return found[0] if len(found) == 1 else None
