"""sweeper: run a Dataprep recipe for every combination of run parameters, exactly once.

The public API is imported lazily so that ``sweeper --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "sweeper.config",
    "SweepConfig": "sweeper.config",
    "expand_matrix": "sweeper.matrix",
    "combinations_bound": "sweeper.matrix",
    "Combination": "sweeper.matrix",
    "connect": "sweeper.connection",
    "DataprepClient": "sweeper.client",
    "Ledger": "sweeper.ledger",
    "read_ledger": "sweeper.ledger",
    "current_state": "sweeper.ledger",
    "Planner": "sweeper.planner",
    "run_sweep": "sweeper.runner",
    "RunSummary": "sweeper.runner",
    "refresh": "sweeper.refreshing",
    "build_report": "sweeper.reporting",
    "SweeperError": "sweeper.errors",
    "ConfigError": "sweeper.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"], key=str.casefold)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
