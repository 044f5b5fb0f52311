"""sweeper: run a Dataprep recipe for every combination of run parameters, exactly once.

``run``, ``plan``, ``status`` and ``report`` do what the commands of the same names do and
return typed results; ``exit_code_for`` turns a result or an error into the CLI's exit code.

The names are imported on first use, so that ``sweeper --help`` stays fast; type checkers see
the real imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sweeper.client import DataprepClient as DataprepClient
    from sweeper.commands import ConfigSource as ConfigSource
    from sweeper.commands import SweepPlan as SweepPlan
    from sweeper.commands import plan as plan
    from sweeper.commands import report as report
    from sweeper.commands import run as run
    from sweeper.commands import status as status
    from sweeper.config import SweepConfig as SweepConfig
    from sweeper.config import load_config as load_config
    from sweeper.connection import connect as connect
    from sweeper.errors import ConfigError as ConfigError
    from sweeper.errors import ExitCode as ExitCode
    from sweeper.errors import SweeperError as SweeperError
    from sweeper.errors import exit_code_for as exit_code_for
    from sweeper.journal import RunEvent as RunEvent
    from sweeper.journal import RunSummary as RunSummary
    from sweeper.ledger import Ledger as Ledger
    from sweeper.ledger import current_state as current_state
    from sweeper.ledger import read_ledger as read_ledger
    from sweeper.matrix import Combination as Combination
    from sweeper.matrix import combinations_bound as combinations_bound
    from sweeper.matrix import expand_matrix as expand_matrix
    from sweeper.planner import Planner as Planner
    from sweeper.refreshing import StatusResult as StatusResult
    from sweeper.refreshing import refresh as refresh
    from sweeper.reporting import Report as Report
    from sweeper.reporting import build_report as build_report
    from sweeper.runner import run_sweep as run_sweep
    from sweeper.state import State as State

# name -> the module that defines it; must match the imports above (a test checks).
_EXPORTS = {
    "run": "sweeper.commands",
    "plan": "sweeper.commands",
    "status": "sweeper.commands",
    "report": "sweeper.commands",
    "SweepPlan": "sweeper.commands",
    "ConfigSource": "sweeper.commands",
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
    "RunSummary": "sweeper.journal",
    "RunEvent": "sweeper.journal",
    "refresh": "sweeper.refreshing",
    "StatusResult": "sweeper.refreshing",
    "build_report": "sweeper.reporting",
    "Report": "sweeper.reporting",
    "State": "sweeper.state",
    "ExitCode": "sweeper.errors",
    "exit_code_for": "sweeper.errors",
    "SweeperError": "sweeper.errors",
    "ConfigError": "sweeper.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"], key=str.casefold)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
