"""Files written for people: atomic writes, and CSV cells a spreadsheet will not run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from sweeper.errors import OutputError
from sweeper.ledger import fsync_directory

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize(cell: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with `'` (OWASP ASVS 1.2.10)."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


class AtomicFile:
    """A text file written under a temporary name in its directory, renamed into place on
    ``commit`` (after fsync), removed on ``discard``: readers never see a partial file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle: IO[str] = self.tmp.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise _error(self.path, exc) from None

    def write(self, text: str) -> None:
        try:
            self.handle.write(text)
        except OSError as exc:
            self.discard()
            raise _error(self.path, exc) from None

    def commit(self) -> Path:
        """Flush, fsync, rename into place and fsync the directory; returns the path."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
            fsync_directory(self.path.parent)
        except OSError as exc:
            self.discard()
            raise _error(self.path, exc) from None
        return self.path

    def discard(self) -> None:
        """Drop the temporary file; the path keeps what it held before."""
        with contextlib.suppress(OSError):  # a failed write may fail to close too
            self.handle.close()
        self.tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; OutputError (exit 1) if it cannot be."""
    out = AtomicFile(path)
    try:
        out.write(text)
    except BaseException:
        out.discard()
        raise
    return out.commit()


def _error(path: Path, exc: OSError) -> OutputError:
    cause = exc.strerror or str(exc)
    return OutputError(f"could not write {path}: {cause}; nothing was written there.")
