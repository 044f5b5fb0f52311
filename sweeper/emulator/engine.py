"""Job lifecycle: plan a group's jobs at creation, then run each one exactly once when it is due.

State is computed from timestamps on each read (`advance`), so no background task is needed: a job
whose scheduled end has passed is executed (recipe run, files written) inside an IMMEDIATE
transaction the first time anyone looks, and its final status is stored. Outputs therefore exist
before any read can report the group Complete, and two apps on one state file never write twice.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from sweeper.emulator.catalog import Dataset, RecipeError, fill
from sweeper.emulator.faults import FaultInjector
from sweeper.emulator.output import OutputError, write
from sweeper.emulator.settings import EmulatorSettings
from sweeper.emulator.store import Store, dumps

TERMINAL = ("Complete", "Failed", "Canceled")
SAMPLE_SIZE = 100


def iso(at: float) -> str:
    """ISO-8601 UTC with milliseconds, as the API writes timestamps."""
    stamp = datetime.fromtimestamp(at, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def write_settings_of(overrides: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The request's write settings under either documented spelling, or None."""
    for key in ("writesettings", "writeSettings"):
        if key in overrides:
            value = overrides[key]
            return list(value) if isinstance(value, list) else None
    return None


class Engine:
    """Creates job groups and moves them through Created -> InProgress -> a terminal status."""

    def __init__(
        self,
        settings: EmulatorSettings,
        store: Store,
        catalog: Mapping[int, Dataset],
        faults: FaultInjector,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.faults = faults
        self._clock = settings.clock or time.time

    def now(self) -> float:
        return self._clock()

    # creation ---------------------------------------------------------------------------------

    def create(
        self,
        conn: sqlite3.Connection,
        *,
        dataset: Dataset,
        body: Mapping[str, Any],
        given: Sequence[tuple[str, str]],
        execution_id: str | None,
        user_key: str,
        now: float,
    ) -> dict[str, Any]:
        """Insert the group and its planned jobs; returns the 201 body (RunJobResult)."""
        overrides = body.get("overrides") or {}
        params = dict(dataset.parameters) | dict(given)
        group_id = Store.next_id(conn)
        settings = write_settings_of(overrides)
        if settings is None:
            values = params | {"jobGroupId": str(group_id)}
            settings = [
                {k: fill(v, values) if isinstance(v, str) else v for k, v in o.items()}
                for o in dataset.outputs
            ]
        profiler = bool(overrides.get("profiler", False))
        s, slow = self.settings, self.faults.slow_factor(params)
        scale = max(s.time_scale, 1e-9)

        def span(seconds: float) -> float:
            return seconds * slow / scale

        started = now + span(s.created_seconds)
        plan: list[tuple[str, Mapping[str, Any] | None, float]] = [
            ("wrangle", None, span(s.wrangle_seconds))
        ]
        plan += [("filewriter", ws, span(s.filewriter_seconds)) for ws in settings]
        if profiler:
            plan.append(("profile", None, span(s.profile_seconds)))
        reference = (body.get("runParameters") or {}).get("referenceDate")
        if not isinstance(reference, str):
            reference = iso(float(int(now)))
        conn.execute(
            "INSERT INTO job_groups (id, execution_id, session_id, dataset_id, params_key, body, "
            "params, profiler, execution, created_at, started_at, reference_date, user_key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                group_id,
                execution_id,
                str(uuid.uuid4()),
                dataset.id,
                dumps(sorted(given)),
                dumps(body),
                dumps(params),
                int(profiler),
                str(overrides.get("execution") or "photon"),
                now,
                started,
                reference,
                user_key,
            ),
        )
        failure = self.faults.job_failure(group_id, params)
        if failure:
            Store.bump(conn, "fault:job_fail")
        if slow != 1.0:
            Store.bump(conn, "fault:slow_job")
        job_ids = [Store.next_id(conn) for _ in plan]  # contiguous, in execution order
        at = started
        for seq, (job_type, ws, duration) in enumerate(plan):
            job_id = job_ids[seq]
            ws_id = Store.next_id(conn) if ws is not None else None
            conn.execute(
                "INSERT INTO jobs (id, group_id, seq, job_type, write_setting, write_setting_id, "
                "start_at, end_at, planned_failure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    group_id,
                    seq,
                    job_type,
                    dumps(ws) if ws is not None else None,
                    ws_id,
                    at,
                    at + duration,
                    failure if job_type == "wrangle" else None,
                ),
            )
            at += duration
        session = conn.execute(
            "SELECT session_id FROM job_groups WHERE id = ?", (group_id,)
        ).fetchone()[0]
        return {
            "sessionId": session,
            "reason": "JobStarted",
            "jobGraph": {
                "vertices": job_ids,
                "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(job_ids)],
            },
            "id": group_id,
            "jobs": {"data": [{"id": j} for j in job_ids]},
        }

    # execution --------------------------------------------------------------------------------

    def advance_due(self) -> None:
        """Advance every group with a job that is due, so outputs appear whoever is asked."""
        rows = self.store.query(
            "SELECT DISTINCT group_id FROM jobs WHERE final_status IS NULL AND end_at <= ?",
            (self.now(),),
        )
        for row in rows:
            self.advance(int(row["group_id"]))

    def advance(self, group_id: int) -> None:
        """Run every job of the group that is due and not yet finished, exactly once."""
        now = self.now()
        pending = self.store.query(
            "SELECT 1 FROM jobs WHERE group_id = ? AND final_status IS NULL AND end_at <= ? "
            "LIMIT 1",
            (group_id, now),
        )
        if not pending:
            return
        with self.store.transaction() as conn:
            group = conn.execute("SELECT * FROM job_groups WHERE id = ?", (group_id,)).fetchone()
            if group is None or group["canceled_at"] is not None:
                return
            jobs = conn.execute(
                "SELECT * FROM jobs WHERE group_id = ? ORDER BY seq", (group_id,)
            ).fetchall()
            frame: pd.DataFrame | None = None
            failed_at: float | None = None
            for job in jobs:
                if job["final_status"] is not None:
                    if job["final_status"] == "Failed":
                        failed_at = float(job["finished_at"])
                    continue
                if failed_at is not None:
                    self._finish(conn, job["id"], "Canceled", failed_at, "An upstream job failed.")
                    continue
                if job["end_at"] > now:
                    break
                status, error, outputs = "Complete", None, None
                try:
                    if job["planned_failure"]:
                        raise RecipeError(job["planned_failure"])
                    if job["job_type"] in ("wrangle", "filewriter") and frame is None:
                        frame = self._dataset(group).run(json.loads(group["params"]))
                    if job["job_type"] == "filewriter" and frame is not None:
                        outputs = self._write(frame, job)
                except (RecipeError, OutputError) as exc:
                    status, error = "Failed", str(exc)
                except OSError as exc:
                    status, error = "Failed", f"The emulator could not write the output: {exc}."
                self._finish(conn, job["id"], status, float(job["end_at"]), error, outputs)
                if status == "Failed":
                    failed_at = float(job["end_at"])

    def _dataset(self, group: sqlite3.Row) -> Dataset:
        dataset = self.catalog.get(int(group["dataset_id"]))
        if dataset is None:
            raise RecipeError(f"Recipe {group['dataset_id']} is no longer in the catalog.")
        return dataset

    def _write(self, frame: pd.DataFrame, job: sqlite3.Row) -> list[dict[str, str]]:
        setting = json.loads(job["write_setting"])
        if not isinstance(setting, dict):
            raise OutputError(
                "The writeSetting is not an object; send {path, action, format, ...}."
            )
        root = self.settings.output_root.resolve()
        files = write(frame, setting, root, int(job["id"]), self.settings.protected_paths)
        outputs = []
        requested = str(setting.get("path", ""))
        for path in files:
            relative = path.relative_to(root).as_posix()
            if "://" in requested:  # report bucket outputs in the URI form they were asked in
                _, scheme, bucket, rest = [*relative.split("/", 3), ""][:4]
                logical = f"{scheme}://{bucket}/{rest}"
            else:
                logical = relative
            outputs.append({"path": logical, "localPath": str(path)})
        return outputs

    @staticmethod
    def _finish(
        conn: sqlite3.Connection,
        job_id: int,
        status: str,
        at: float,
        error: str | None,
        outputs: list[dict[str, str]] | None = None,
    ) -> None:
        conn.execute(
            "UPDATE jobs SET final_status = ?, finished_at = ?, error_message = ?, outputs = ? "
            "WHERE id = ? AND final_status IS NULL",
            (status, at, error, dumps(outputs) if outputs is not None else None, job_id),
        )

    def cancel(self, group_id: int) -> list[int]:
        """Cancel every unfinished job (after running what is already due); [] if terminal."""
        self.advance(group_id)
        now = self.now()
        with self.store.transaction() as conn:
            group = conn.execute(
                "SELECT canceled_at FROM job_groups WHERE id = ?", (group_id,)
            ).fetchone()
            jobs = conn.execute(
                "SELECT id, final_status FROM jobs WHERE group_id = ? ORDER BY seq", (group_id,)
            ).fetchall()
            if group is None or group["canceled_at"] is not None:
                return []
            if all(j["final_status"] is not None for j in jobs):
                return []  # terminal: "If the job has completed, this endpoint does nothing."
            conn.execute("UPDATE job_groups SET canceled_at = ? WHERE id = ?", (now, group_id))
            ids = []
            for job in jobs:
                if job["final_status"] is None:
                    self._finish(conn, job["id"], "Canceled", now, None)
                    ids.append(int(job["id"]))
            return ids

    # rendering --------------------------------------------------------------------------------

    def group_status(self, group: sqlite3.Row, jobs: Sequence[sqlite3.Row], now: float) -> str:
        finals = [j["final_status"] for j in jobs]
        if group["canceled_at"] is not None:
            return "Canceled"
        if "Failed" in finals:
            return "Failed"
        if finals and all(f == "Complete" for f in finals):
            return "Complete"
        return "Created" if now < group["started_at"] else "InProgress"

    def job_json(
        self, job: sqlite3.Row, group: sqlite3.Row, now: float, embed_ws: bool
    ) -> dict[str, Any]:
        start, end = float(job["start_at"]), float(job["end_at"])
        status = job["final_status"]
        seen = float(job["finished_at"]) if status else now
        if status is None:
            status = "Created" if now < start else "InProgress"
        if status == "Complete":
            percent = 100
        elif seen <= start:
            percent = 0
        else:
            percent = min(99, int((seen - start) / max(end - start, 1e-9) * 100))
        created = float(group["created_at"])
        heartbeat = None if status == "Created" else iso(max(start, min(seen, end)))
        data: dict[str, Any] = {
            "id": job["id"],
            "status": status,
            "jobType": job["job_type"],
            "sampleSize": SAMPLE_SIZE,
            "percentComplete": percent,
            "errorMessage": job["error_message"],
            "lastHeartbeatAt": heartbeat,
            "createdAt": iso(created),
            "updatedAt": iso(created if status == "Created" else max(start, min(seen, end))),
            "creator": {"id": 1},
            "jobGroup": {"id": group["id"]},
        }
        if job["job_type"] == "wrangle":
            data["executionLanguage"] = group["execution"]
        if job["job_type"] == "filewriter":
            ws: dict[str, Any] = {"id": job["write_setting_id"]}
            if embed_ws:
                setting = json.loads(job["write_setting"])
                setting = setting if isinstance(setting, dict) else {}
                ws |= {
                    "path": setting.get("path"),
                    "action": setting.get("action"),
                    "format": setting.get("format"),
                    "compression": setting.get("compression", "none"),
                }
            data["writeSetting"] = ws
        return data

    def _flow_run_ref(self, group_id: int) -> dict[str, int] | None:
        """``{"id": flowRunId}`` for a group a flow run started, else None (a recipe run)."""
        rows = self.store.query(
            "SELECT flow_run_id FROM flow_run_groups WHERE group_id = ?", (group_id,)
        )
        return {"id": int(rows[0][0])} if rows else None

    def group_json(
        self, group: sqlite3.Row, jobs: Sequence[sqlite3.Row], now: float, embed: set[str]
    ) -> dict[str, Any]:
        status = self.group_status(group, jobs, now)
        body = json.loads(group["body"])
        created = float(group["created_at"])
        moments = [created]
        if now >= group["started_at"]:
            moments.append(float(group["started_at"]))
        moments += [float(j["finished_at"]) for j in jobs if j["finished_at"] is not None]
        # Not sent: "api" (the run came through the API). Sent as null: null, which the platform
        # uses to keep the job off the Job Details page, so it must not read as "api".
        if "ranfrom" in body and body["ranfrom"] is None:
            ranfrom = None
        elif body.get("ranfrom") in ("ui", "schedule", "api"):
            ranfrom = body["ranfrom"]
        else:
            ranfrom = "api"
        data: dict[str, Any] = {
            "id": group["id"],
            "name": None,
            "description": None,
            "ranfrom": ranfrom,
            "ranfor": "recipe",
            "status": status,
            "profilingEnabled": bool(group["profiler"]),
            "runParameterReferenceDate": group["reference_date"],
            "createdAt": iso(created),
            "updatedAt": iso(max(m for m in moments if m <= max(now, created))),
            "workspace": {"id": 1},
            "creator": {"id": 1},
            "updater": {"id": 1},
            "snapshot": {"id": group["id"]},
            "wrangledDataset": {"id": group["dataset_id"]},
            "flowRun": self._flow_run_ref(int(group["id"])),
            "runParameters": {"overrides": {"data": _given(body)}},
        }
        if "wrangledDataset" in embed:
            dataset = self.catalog.get(int(group["dataset_id"]))
            name = dataset.name if dataset else None
            data["wrangledDataset"] = {
                "id": group["dataset_id"],
                "wrangled": True,
                "name": name,
                "recipe": {"id": group["dataset_id"], "name": name, "description": None},
                "flow": {"id": 1},
            }
        if "jobs" in embed:
            ws = "jobs.writeSetting" in embed
            data["jobs"] = {"data": [self.job_json(j, group, now, ws) for j in jobs]}
        return data


def _given(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    run = body.get("runParameters") or {}
    data = (run.get("overrides") or {}).get("data") or []
    return [dict(item) for item in data if isinstance(item, dict)]
