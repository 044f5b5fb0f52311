"""sweeper: run a Dataprep recipe for every combination of run parameters, exactly once."""

from __future__ import annotations

__version__ = "0.1.0"
