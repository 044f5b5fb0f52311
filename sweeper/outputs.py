"""The second signal of success: a Complete job group really wrote the outputs it was asked for.

A platform's accounting can say Complete while an output is missing, so with
``run.verify_outputs`` a combination only counts as succeeded when both signals agree.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from sweeper.client import DataprepClient
from sweeper.errors import ApiError

# Slack for clocks: a file modified up to this long before the group's createdAt still counts.
CLOCK_SLACK_S = 2.0


def written_by(expected: str, listed: Iterable[str]) -> bool:
    """True if one of the files a job group lists is the output written for ``expected``.

    A writeSetting path may come back as itself (perhaps with an absolute prefix, when the request
    named a relative path), as a folder of part files (``asSingleFile`` false), or under a
    parallel name when ``create`` found the path taken (``name_<job id>.csv``).
    """
    want = expected.rstrip("/")
    folder, _, name = want.rpartition("/")
    stem, dot, ext = name.partition(".")
    prefix = f"{folder}/" if folder else ""
    parallel = re.compile(
        r"(?:^|/)" + re.escape(prefix + stem) + r"_\d+" + re.escape(dot + ext) + "$"
    )
    for found in (f.rstrip("/") for f in listed):
        if found == want or found.endswith("/" + want):
            return True
        if found.startswith(want + "/") or f"/{want}/" in found:
            return True  # a part file in the output folder
        if parallel.search(found):
            return True
    return False


def _fresh_local(path: Path, created_at: float | None) -> bool:
    """A local output written by this group: the path itself, or the parallel name ``create``
    picks when the path was taken, exists and is not older than the group."""
    candidates = [path]
    if path.parent.is_dir():
        stem, dot, ext = path.name.partition(".")
        parallel = re.compile(re.escape(stem) + r"_\d+" + re.escape(dot + ext))
        candidates += [p for p in path.parent.iterdir() if parallel.fullmatch(p.name)]
    for candidate in candidates:
        if not candidate.exists():
            continue
        files = (
            [p for p in candidate.rglob("*") if p.is_file()] if candidate.is_dir() else [candidate]
        )
        if files and (
            created_at is None
            or max(p.stat().st_mtime for p in files) >= created_at - CLOCK_SLACK_S
        ):
            return True
    return False


async def verify_outputs(
    client: DataprepClient,
    job_group_id: int,
    expected: Sequence[str],
    *,
    created_at: float | None = None,
    base: Path | None = None,
) -> tuple[str, str]:
    """("yes" | "no" | "unchecked", note) for the outputs of one Complete job group.

    A local path must exist on this machine and be newer than the group, so a file left by an
    earlier run does not pass. A bucket path (``gs://``, ``s3://``...) is looked up in the
    platform's ``/outputs`` listing of this very group; without that listing it is not checked,
    and the note says so. A relative local path is taken relative to ``base`` (default: the
    working directory).
    """
    if not expected:
        return "unchecked", "no writeSettings in the request: outputs not checked"
    listed: tuple[str, ...] | None = None
    missing: list[str] = []
    for path in expected:
        if "://" not in path:
            local = base / path if base is not None else Path(path)
            ok = await asyncio.to_thread(_fresh_local, local, created_at)
        else:
            if listed is None:
                try:
                    listed = await client.get_outputs(job_group_id)
                except ApiError:
                    return "unchecked", f"the platform lists no outputs, so {path} is not checked"
            ok = written_by(path, listed)
        if not ok:
            missing.append(path)
    if missing:
        return "no", "outputs missing: " + ", ".join(missing)
    return "yes", ""
