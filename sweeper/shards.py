"""Shards: one sweep split over N processes or machines by combination id, one ledger each.

Shard K of N runs the combinations whose ``combo_id`` (16 hex digits, read as an integer) is K
modulo N: stable across nights and machines, and independent of the matrix's order. Each shard
appends to its own ledger beside the sweep's (``results/regions.shard-2-of-8.csv``) and plans
from the union of every ledger of the sweep, so changing N between nights neither loses history
nor resubmits anything.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sweeper.errors import ConfigError, LedgerLockedError
from sweeper.ledger import Ledger, LedgerRow, read_ledger

_SYNTAX = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(
                f"--shard needs N >= 1, got {self.index}/{self.count}.", key="--shard"
            )
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"--shard K/N needs 0 <= K < N (shards are numbered from 0), got "
                f"{self.index}/{self.count}.",
                key="--shard",
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, combo_id: str) -> bool:
        """Whether this shard runs the combination ``combo_id``."""
        return in_shard(combo_id, self.index, self.count)

    def ledger(self, main: Path) -> Path:
        """This shard's ledger, beside the sweep's main ledger ``main``."""
        return main.with_name(f"{main.stem}.shard-{self.index}-of-{self.count}{main.suffix}")


def in_shard(combo_id: str, index: int, count: int) -> bool:
    """Whether ``combo_id`` (its first 16 hex digits, as an integer) is ``index`` mod ``count``."""
    return int(combo_id[:16], 16) % count == index


def parse_shard(value: str | tuple[int, int] | Shard | None) -> Shard | None:
    """``"K/N"`` or ``(K, N)`` as a Shard (None stays None); ConfigError when malformed."""
    if value is None or isinstance(value, Shard):
        return value
    if isinstance(value, tuple):
        index, count = value
        return Shard(int(index), int(count))
    found = _SYNTAX.match(value)
    if found is None:
        raise ConfigError(
            f"--shard takes K/N, shard K of N counted from 0 (e.g. 0/8 ... 7/8), not {value!r}.",
            key="--shard",
        )
    return Shard(int(found.group(1)), int(found.group(2)))


def shard_ledgers(main: Path) -> list[Path]:
    """Every shard ledger of the sweep whose main ledger is ``main``, in a stable order."""
    pattern = re.compile(rf"^{re.escape(main.stem)}\.shard-(\d+)-of-(\d+){re.escape(main.suffix)}$")
    if not main.parent.is_dir():
        return []
    found: list[tuple[int, int, Path]] = []
    for path in main.parent.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(2)), int(match.group(1)), path))
    return [path for _, _, path in sorted(found)]


def sweep_ledgers(main: Path) -> list[Path]:
    """The main ledger (if it exists) and every shard ledger beside it."""
    return ([main] if main.is_file() else []) + shard_ledgers(main)


def merge_rows(parts: Iterable[Sequence[LedgerRow]]) -> list[LedgerRow]:
    """Rows of several ledgers as one history, by timestamp; each file keeps its own order."""
    return list(heapq.merge(*parts, key=lambda row: row.ts))


def read_sweep_ledgers(
    main: Path, *, sweep: str | None, exclude: Path | None = None
) -> list[LedgerRow]:
    """The merged rows of every ledger of the sweep (read without locking), but ``exclude``."""
    skip = exclude.resolve() if exclude is not None else None
    parts = [
        read_ledger(path, sweep=sweep)
        for path in sweep_ledgers(main)
        if skip is None or path.resolve() != skip
    ]
    return merge_rows(parts)


class LedgerSet:
    """Several ledgers of one sweep seen as one: merged history, each row appended where its
    combination's last row came from.

    Ledgers locked by a running sweep or shard are read as they are and never written
    (``busy`` says which, and who holds them).
    """

    def __init__(
        self,
        writable: Sequence[Ledger],
        read_only: Sequence[tuple[Path, list[LedgerRow], str]],
    ):
        self._writable = list(writable)
        self._read_only = list(read_only)
        # Who holds each ledger read as is: the running sweep refreshes its own groups.
        self.busy = [f"{path}: {holder}" for path, _, holder in self._read_only]
        self._owners: dict[tuple[str, str], tuple[str, Ledger | None]] | None = None

    @classmethod
    def open(
        cls, main: Path, *, sweep: str, param_names: Sequence[str], run_id: str | None
    ) -> LedgerSet:
        """Lock every ledger of the sweep that no running shard holds; read the others."""
        writable: list[Ledger] = []
        read_only: list[tuple[Path, list[LedgerRow], str]] = []
        try:
            for path in sweep_ledgers(main):
                try:
                    writable.append(
                        Ledger.open(path, sweep=sweep, param_names=param_names, run_id=run_id)
                    )
                except LedgerLockedError as exc:
                    read_only.append((path, read_ledger(path, sweep=sweep), exc.holder))
        except BaseException:
            for ledger in writable:
                ledger.close()
            raise
        return cls(writable, read_only)

    def history(self) -> list[LedgerRow]:
        """Every row of every ledger, merged by timestamp."""
        return merge_rows(
            [*(ledger.rows for ledger in self._writable), *(r for _, r, _ in self._read_only)]
        )

    def owner(self, row: LedgerRow) -> Ledger | None:
        """The writable ledger holding the latest row of ``row``'s combination in its run."""
        if self._owners is None:
            owners: dict[tuple[str, str], tuple[str, Ledger | None]] = {}
            sources: list[tuple[Sequence[LedgerRow], Ledger | None]]
            sources = [(ledger.rows, ledger) for ledger in self._writable]
            sources += [(rows, None) for _, rows, _ in self._read_only]
            for rows, ledger in sources:
                for candidate in rows:
                    key = (candidate.run_id, candidate.combo_id)
                    seen = owners.get(key)
                    if seen is None or candidate.ts >= seen[0]:
                        owners[key] = (candidate.ts, ledger)
            self._owners = owners
        found = self._owners.get((row.run_id, row.combo_id))
        return found[1] if found is not None else None

    def can_append(self, row: LedgerRow) -> bool:
        return self.owner(row) is not None

    def append(self, row: LedgerRow) -> None:
        """Append ``row`` to the ledger its combination's last row came from."""
        owner = self.owner(row)
        if owner is None:
            raise ValueError(f"no writable ledger holds combination {row.combo_id}")
        owner.append(row)
        if self._owners is not None:
            self._owners[(row.run_id, row.combo_id)] = (row.ts, owner)

    def close(self) -> None:
        for ledger in self._writable:
            ledger.close()

    def __enter__(self) -> LedgerSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
