"""A Dataprep / Trifacta v4 job-group API emulator: Starlette app, SQLite state, real jobs, faults.

    from sweeper.emulator import EmulatorSettings, create_app
    app = create_app(EmulatorSettings(output_root=Path("results")))

See docs/emulator.md.
"""

from __future__ import annotations

from sweeper.emulator.app import create_app
from sweeper.emulator.faults import load_faults
from sweeper.emulator.settings import EmulatorSettings, FaultSettings

__all__ = ["EmulatorSettings", "FaultSettings", "create_app", "load_faults"]
