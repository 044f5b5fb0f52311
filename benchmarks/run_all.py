"""Run the five benchmarks one after the other; each prints its table.

    python benchmarks/run_all.py               # the default runs: ~15 minutes
    python benchmarks/run_all.py --quick       # smoke runs: about a minute
    python benchmarks/run_all.py --record      # also save each table under results/benchmarks/

Extra arguments are passed to every script (e.g. --repeat 3, --record).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("startup.py", "scale.py", "polling.py", "latency.py", "quota.py")


def main() -> int:
    args = sys.argv[1:]
    here = Path(__file__).resolve().parent
    failed = []
    for script in SCRIPTS:
        print(f"=== {script} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(here / script), *args], check=False).returncode:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
