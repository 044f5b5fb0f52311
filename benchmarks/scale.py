"""Scale benchmark: planning 100,000 combinations, folding a 100,000-row ledger, fsync'd appends.

    python benchmarks/scale.py                 # 3 runs of each, ~1-2 minutes
    python benchmarks/scale.py --quick         # 10,000 of each, one run, seconds

Every measurement runs in a fresh child process, so peak RSS (ru_maxrss) belongs to it alone:
* plan: `sweeper plan` on a 4-axis matrix (10 x 10 x 25 x 40) with `--output plan.csv
  --allow-large`; wall time and the child's peak RSS (RUSAGE_CHILDREN, via a wrapper process);
* fold: a ledger of 25,000 combinations x 4 events (intent, submitted, finished and one more
  intent/submitted pair for a quarter of them), written with `sweeper.ledger.Ledger.append`
  (fsync patched out only while generating), then `read_ledger` + `current_state` timed;
* append: `Ledger.append` with its fsync per row, rows per second, and the same with fsync
  patched out (the cost of durability).
Targets: plan < 5 s and < 300 MB; fold < 3 s and < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import figures
from harness import median, scratch

PLAN_AXES = {"A": 10, "B": 10, "C": 25, "D": 40}  # product: 100,000
EVENTS = ("intent", "submitted", "finished")


def plan_config(path: Path, total: int) -> Path:
    axes = dict(PLAN_AXES)
    if total != 100_000:  # --quick: shrink the last axis
        axes["D"] = max(1, total // (10 * 10 * 25))
    lines = [
        "[sweep]",
        'name = "scale"',
        "dataset = 33",
        f'ledger = "{(path.parent / "scale.csv").as_posix()}"',
        "",
        "[api]",
        'base_url = "embedded"',
        "",
        "[matrix]",
        *(f"{k} = {{ start = 1, end = {v} }}" for k, v in axes.items()),
        "",
        "[overrides]",
        'execution = "photon"',
        "",
        "[[overrides.writeSettings]]",
        'path = "results/out/{run_id}/{A}/{B}/{C}/{D}.csv"',
        'action = "create"',
        'format = "csv"',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- child processes

WRAPPER = """
import resource, subprocess, sys, time, json
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": wall, "rss_mb": rss_kb / 1024, "rc": proc.returncode,
                  "stderr": proc.stderr[-500:]}))
"""


def child(args: list[str]) -> dict[str, Any]:
    """Run this script's hidden `--child` mode in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed: {out.stderr[-800:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure_plan(workdir: Path, total: int) -> dict[str, Any]:
    config = plan_config(workdir / "scale.toml", total)
    cmd = [sys.executable, "-m", "sweeper", "plan", str(config), "--run-id", "scale"]
    cmd += ["--output", str(workdir / "plan.csv"), "--allow-large"]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
        check=False,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"sweeper plan failed: {result['stderr']}")
    lines = sum(1 for _ in (workdir / "plan.csv").open(encoding="utf-8"))
    result["plan_rows"] = lines - 1
    return result


def _rows(n_rows: int) -> list[Any]:
    from sweeper.identity import combo_id, execution_id
    from sweeper.ledger import Event, LedgerRow, utc_timestamp

    combos = max(1, n_rows // 4)
    ts = utc_timestamp()
    out: list[LedgerRow] = []
    i = 0
    while len(out) < n_rows:
        k = i % combos
        params = {"Region": f"{k % 50:02d}", "Day": f"2026-{1 + k % 12:02d}-{1 + k % 28:02d}"}
        params["Item"] = str(k)
        cid = combo_id(33, params)
        eid = execution_id("scale", "run-1", cid)
        event = [*EVENTS, "intent"][(i // combos) % 4]
        out.append(
            LedgerRow(
                ts=ts,
                sweep="scale",
                run_id="run-1",
                combo_id=cid,
                event=Event(event),
                attempt=1,
                execution_id=eid,
                params=params,
                http_status=201 if event == "submitted" else None,
                job_group_id=1000 + k if event != "intent" else None,
                job_ids=(2000 + k, 3000 + k) if event != "intent" else (),
                status="Complete" if event == "finished" else "",
                duration_s=1.5 if event == "finished" else None,
                reason="new",
            )
        )
        i += 1
    return out


def child_generate(path: str, n_rows: int) -> dict[str, Any]:
    from sweeper.ledger import Ledger

    rows = _rows(n_rows)
    started = time.perf_counter()
    # Durability is not what is measured here: generate without an fsync per row.
    with (
        mock.patch("sweeper.ledger.os.fsync"),
        Ledger.open(path, sweep="scale", param_names=("Region", "Day", "Item")) as ledger,
    ):
        for row in rows:
            ledger.append(row)
    return {"rows": len(rows), "wall_s": time.perf_counter() - started}


def child_fold(path: str) -> dict[str, Any]:
    from sweeper.ledger import current_state, read_ledger

    started = time.perf_counter()
    rows = read_ledger(path)
    read_s = time.perf_counter() - started
    state = current_state(rows)
    total = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": len(rows),
        "combos": len(state),
        "read_s": read_s,
        "wall_s": total,
        "rss_mb": rss,
    }


def child_append(path: str, n_rows: int, fsync: bool) -> dict[str, Any]:
    from sweeper.ledger import Ledger

    rows = _rows(n_rows)
    patch = mock.patch("sweeper.ledger.os.fsync") if not fsync else mock.MagicMock()
    with (
        patch,
        Ledger.open(path, sweep="scale", param_names=("Region", "Day", "Item")) as ledger,
    ):
        started = time.perf_counter()
        for row in rows:
            ledger.append(row)
        wall = time.perf_counter() - started
    return {"rows": n_rows, "rows_per_s": n_rows / wall, "ms_per_row": wall / n_rows * 1000}


def run_child(argv: list[str]) -> None:
    mode, *rest = argv
    if mode == "generate":
        result = child_generate(rest[0], int(rest[1]))
    elif mode == "fold":
        result = child_fold(rest[0])
    elif mode == "append":
        result = child_append(rest[0], int(rest[1]), rest[2] == "fsync")
    else:
        raise SystemExit(f"unknown child mode {mode}")
    print(json.dumps(result))


# ---------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    parser.add_argument("--quick", action="store_true", help="10,000 of each, one run")
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    total = 10_000 if args.quick else 100_000
    appends = 200 if args.quick else 2_000
    repeat = 1 if args.quick else args.repeat
    info = figures.machine()
    plans: list[dict[str, Any]] = []
    folds: list[dict[str, Any]] = []
    synced: list[dict[str, Any]] = []
    unsynced: list[dict[str, Any]] = []
    with scratch("scale") as workdir:
        ledger = workdir / "fold.csv"
        made = child(["generate", str(ledger), str(total)])
        print(f"generated a {made['rows']:,}-row ledger in {made['wall_s']:.1f} s (no fsync)")
        for rep in range(repeat):
            plans.append(measure_plan(workdir, total))
            folds.append(child(["fold", str(ledger)]))
            for name, bucket, mode in (("a", synced, "fsync"), ("b", unsynced, "nofsync")):
                target = workdir / f"append-{rep}-{name}.csv"
                bucket.append(child(["append", str(target), str(appends), mode]))
            print(
                f"run {rep + 1}: plan {plans[-1]['wall_s']:.2f} s {plans[-1]['rss_mb']:.0f} MB; "
                f"fold {folds[-1]['wall_s']:.2f} s; append {synced[-1]['rows_per_s']:.0f} rows/s"
            )
    rows = [
        [
            f"plan {plans[0]['plan_rows']:,} combinations (`sweeper plan --output`)",
            median([p["wall_s"] for p in plans]),
            median([p["rss_mb"] for p in plans]),
            ", ".join(f"{p['wall_s']:.2f}" for p in plans),
            "< 5 s, < 300 MB" if total == 100_000 else "-",
        ],
        [
            f"fold {folds[0]['rows']:,} rows -> {folds[0]['combos']:,} combinations "
            f"(read_ledger {median([f['read_s'] for f in folds]):.2f} s + current_state)",
            median([f["wall_s"] for f in folds]),
            median([f["rss_mb"] for f in folds]),
            ", ".join(f"{f['wall_s']:.2f}" for f in folds),
            "< 3 s, < 300 MB" if total == 100_000 else "-",
        ],
        [
            f"{appends:,} ledger appends with fsync: "
            f"{median([s['rows_per_s'] for s in synced]):,.0f} rows/s, "
            f"{median([s['ms_per_row'] for s in synced]):.2f} ms/row",
            median([s["ms_per_row"] for s in synced]) * appends / 1000,
            float("nan"),
            ", ".join(f"{s['rows_per_s']:.0f}/s" for s in synced),
            "-",
        ],
        [
            f"{appends:,} ledger appends, fsync patched out: "
            f"{median([s['rows_per_s'] for s in unsynced]):,.0f} rows/s",
            median([s["ms_per_row"] for s in unsynced]) * appends / 1000,
            float("nan"),
            ", ".join(f"{s['rows_per_s']:.0f}/s" for s in unsynced),
            "-",
        ],
    ]
    headers = ("what", "median s", "peak RSS MB", "runs", "target")
    title = f"Scale: {total:,} combinations and ledger rows, {repeat} run(s)"
    figures.report(title, info, figures.table(headers, rows), record=args.record)


if __name__ == "__main__":
    main()
