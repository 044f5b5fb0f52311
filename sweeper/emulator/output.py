"""Writing a filewriter job's result where its writeSetting asks, without leaving output_root."""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

BUCKET_SCHEMES = ("gs", "s3")
FORMATS = ("csv", "json")
COMPRESSIONS = ("none", "gzip")
ACTIONS = ("create", "append", "overwrite")
PART_ROWS = 10  # rows per part file when asSingleFile is false
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)/?(.*)$")


class OutputError(Exception):
    """A writeSetting cannot be honoured; becomes the filewriter job's errorMessage."""


def resolve(path: str, output_root: Path) -> Path:
    """Map a writeSetting path to a file under output_root, or raise OutputError."""
    if not isinstance(path, str) or not path:
        raise OutputError(
            "The writeSetting has no path; give a relative path or gs:// / s3:// URI."
        )
    if "\x00" in path:
        raise OutputError("The writeSetting path contains a NUL character; remove it.")
    match = _URI.match(path)
    if match:
        scheme, bucket, rest = match.groups()
        if scheme not in BUCKET_SCHEMES:
            raise OutputError(
                f"The writeSetting path scheme {scheme}:// is not supported by the emulator; "
                "use gs://, s3:// or a relative path."
            )
        if not bucket:
            raise OutputError(f"The writeSetting path {path!r} names no bucket.")
        relative = PurePosixPath("_buckets", scheme, bucket, rest)
    else:
        relative = PurePosixPath(path)
        if relative.is_absolute() or re.match(r"^[A-Za-z]:[\\/]", path) or "\\" in path:
            raise OutputError(
                f"The writeSetting path {path!r} is absolute; the emulator only writes under its "
                "output root, so use a relative path or a gs:// / s3:// URI."
            )
    if ".." in relative.parts:
        raise OutputError(
            f"The writeSetting path {path!r} contains '..'; it may not leave the output root."
        )
    root = output_root.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise OutputError(f"The writeSetting path {path!r} resolves outside the output root.")
    if target == root:
        raise OutputError(
            f"The writeSetting path {path!r} names the output root itself; add a file name."
        )
    return target


def check(setting: Mapping[str, Any]) -> None:
    """Validate the writeSetting values the emulator can honour; raises OutputError."""
    fmt = setting.get("format", "csv")
    if fmt not in FORMATS:
        raise OutputError(
            f"The emulator cannot write format {fmt!r}; supported formats are csv and json "
            "(avro, pqt and hyper are not emulated)."
        )
    compression = setting.get("compression", "none")
    if compression not in COMPRESSIONS:
        raise OutputError(
            f"The emulator cannot write compression {compression!r}; use none or gzip."
        )
    action = setting.get("action", "create")
    if action not in ACTIONS:
        raise OutputError(
            f"Unknown writeSetting action {action!r}; use create, append or overwrite."
        )
    path = str(setting.get("path", ""))
    if compression == "gzip" and not path.endswith(".gz"):
        raise OutputError(
            f"The writeSetting path {path!r} must end with .gz when compression is gzip."
        )


def _encode(frame: pd.DataFrame, fmt: str, header: bool) -> bytes:
    if fmt == "json":  # the platform writes JSON as one object per line
        text = frame.to_json(orient="records", lines=True)
        return (text if text.endswith("\n") or not text else text + "\n").encode("utf-8")
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=header, lineterminator="\n")
    return buffer.getvalue().encode("utf-8")


def _write(target: Path, data: bytes, gz: bool, append: bool) -> None:
    if gz:  # appending a gzip member keeps the file one valid gzip stream
        data = gzip.compress(data, mtime=0)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab" if append else "wb") as handle:
        handle.write(data)


def _free_name(target: Path, job_id: int) -> Path:
    """Where a 'create' goes when the target exists: the job id before the extensions."""
    name = target.name
    stem, dot, ext = name.partition(".")
    return target.with_name(f"{stem}_{job_id}{dot}{ext}")


def write(
    frame: pd.DataFrame,
    setting: Mapping[str, Any],
    output_root: Path,
    job_id: int,
    protected: Sequence[Path] = (),
) -> list[Path]:
    """Write the frame as the writeSetting asks; returns the files written."""
    check(setting)
    target = resolve(str(setting.get("path", "")), output_root)
    for owned in (p.resolve() for p in protected):
        if target == owned or owned in target.parents:
            raise OutputError(
                f"The writeSetting path {setting.get('path')!r} is {owned}, a file the client "
                "keeps (its ledger or state); write outputs elsewhere."
            )
    fmt = str(setting.get("format", "csv"))
    gz = setting.get("compression", "none") == "gzip"
    header = bool(setting.get("header", False))
    action = setting.get("action", "create")
    if action == "create" and target.exists():
        target = _free_name(target, job_id)
    if setting.get("asSingleFile", False):
        if target.is_dir():
            raise OutputError(f"The writeSetting path {setting['path']!r} is a directory.")
        append = action == "append" and target.exists()
        _write(target, _encode(frame, fmt, header and not append), gz, append)
        return [target]
    # a folder of part files, as the platform writes when asSingleFile is false
    if target.exists() and not target.is_dir():
        raise OutputError(f"The writeSetting path {setting['path']!r} is a file, not a folder.")
    existing = sorted(target.glob("part-*")) if target.exists() else []
    if action == "overwrite":
        for old in existing:
            old.unlink()
        existing = []
    suffix = "." + fmt + (".gz" if gz else "")
    written: list[Path] = []
    chunks = [frame.iloc[i : i + PART_ROWS] for i in range(0, max(len(frame), 1), PART_ROWS)]
    for offset, chunk in enumerate(chunks, start=len(existing)):
        part = target / f"part-{offset:05d}{suffix}"
        _write(part, _encode(chunk, fmt, header), gz, append=False)
        written.append(part)
    return written
