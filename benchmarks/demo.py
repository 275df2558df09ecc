"""Time `deepreshape demo --fast` and `deepreshape demo`, step by step, against their targets.

Targets (2 idle CPU cores): the full demo under 600 s, `--fast` under 60 s. Each mode runs
in a fresh subprocess and a fresh folder, so nothing is reused; the step breakdown comes
from the demo's own `demo.json` (wall and CPU seconds of every step).

On a shared machine the wall time says little about an idle one, so the table also gives
each step's CPU seconds (this process and its children, user + system). On an idle machine
with C cores a step's wall time is at most its CPU time (it never waits for another job)
and at least CPU/C; "idle est." is CPU / `--parallelism` (default 1.0: the conservative
bound, no speed-up from the second core). The load average before and after is printed.

    python benchmarks/demo.py                 # both modes
    python benchmarks/demo.py --mode fast     # only --fast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepreshape.cli.common import table

TARGET_S = {"fast": 60.0, "full": 600.0}


def run_mode(mode: str, folder: Path) -> dict:
    """Run the demo in `mode` in `folder`; its wall time, CPU time and step times."""
    out = folder / mode
    argv = [sys.executable, "-m", "deepreshape.cli.main", "demo", "--out", str(out)]
    argv += ["--fast"] if mode == "fast" else []
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"demo ({mode}) failed with exit {proc.returncode}: {proc.stderr[-800:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system
                                                          - before.children_system)
    (folder / f"{mode}-console.txt").write_text(proc.stderr + proc.stdout)
    state = json.loads((out / "demo.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "times": state["times"],
            "last_line": proc.stdout.strip().splitlines()[-1]}


def main() -> None:
    """Run the chosen modes and print the step breakdown and the totals against targets."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("fast", "full", "both"), default="both")
    ap.add_argument("--parallelism", type=float, default=1.0,
                    help="cores a step keeps busy on an idle machine (1.0: conservative)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="run in DIR (a fresh folder) and keep the demos' output there, with "
                    "their console output in DIR/MODE-console.txt")
    args = ap.parse_args()
    modes = ["fast", "full"] if args.mode == "both" else [args.mode]
    load0 = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        if args.keep and any(folder.glob("*/demo.json")):
            raise SystemExit(f"{folder} already holds demo output; give a fresh folder")
        for mode in modes:
            results[mode] = run_mode(mode, folder)
    load1 = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPU cores; load average {load0:.1f} before, "
          f"{load1:.1f} after (other jobs: load minus this benchmark's ~1-2)\n")
    totals = []
    for mode, r in results.items():
        rows = []
        for step in r["times"].values():
            cpu = step["cpu_s"]
            rows.append([step["title"][:60], "skipped" if step["skipped"] else f"{step['wall_s']:.1f}",
                         f"{cpu:.1f}", f"{cpu / args.parallelism:.1f}",
                         f"{100 * cpu / max(r['cpu_s'], 1e-9):.0f}%"])
        print(f"deepreshape demo{' --fast' if mode == 'fast' else ''}: steps")
        print(table(["step", "wall s", "CPU s", "idle est. s", "CPU share"], rows))
        print(f"last console line: {r['last_line']}\n")
        est = r["cpu_s"] / args.parallelism
        totals.append([mode, f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}", f"{est:.0f}",
                       f"{TARGET_S[mode]:.0f}", f"{est / TARGET_S[mode]:.2f}",
                       "yes" if est < TARGET_S[mode] else "NO"])
    print(table(["mode", "wall s", "CPU s", "idle est. s", "target s", "est./target", "meets"],
                totals))


if __name__ == "__main__":
    main()
