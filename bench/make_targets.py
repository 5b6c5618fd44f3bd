"""``python -m bench make train|demo``: a Makefile target end to end, and what it measured.

Runs the repository's own ``make <target>`` in a new temporary folder (so no folder of yours
is touched and nothing of an earlier run is reused), with this interpreter's environment
instead of the target's install step (``make -o .venv/.installed BIN=<this bin>``), times
it, and writes ``bench/results-make-<target>.json``: the command, date, machine and load
average, the wall time, everything the commands printed, the run's own ``summary.json`` and
``metrics.jsonl``, and for ``demo`` the accuracy of its predictions file. docs/benchmarks.md
quotes these files.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: target -> the run folder it trains into, and its predictions file
TARGETS = {"train": ("output/synth", None), "demo": ("output/demo", "output/demo/predictions.csv")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench make", description=__doc__.splitlines()[0])
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the target's commands (default: torch's own choice); on a machine "
                        "shared with other jobs 1 is much faster: OpenMP's waiting threads spin")
    p.add_argument("--out", type=Path, default=None, help="default bench/results-make-<target>.json")
    return p.parse_args(argv)


def predictions_top1(path: Path) -> dict:
    """Top-1 of a predictions CSV on its rows with a label."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"]]
    hits = sum(r["label"] == r["class_1"] for r in rows)
    return {"videos": len(rows), "correct": hits, "top1": 100.0 * hits / len(rows) if rows else None}


def main(argv=None) -> int:
    from bench.__main__ import environment

    args = parse_args(argv)
    run_dir, predictions = TARGETS[args.target]
    out = args.out or ROOT / "bench" / f"results-make-{args.target}.json"
    bin_dir = Path(sys.executable).parent
    command = ["make", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", f"BIN={bin_dir}", args.target]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results = {"command": f"python -m bench make {args.target}" + (f" --threads {args.threads}" if args.threads else ""),
               "omp_num_threads": env.get("OMP_NUM_THREADS"),
               "make": f"make -o .venv/.installed BIN=<this python's bin> {args.target}, in a new empty folder",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "environment": environment("cpu")}
    with tempfile.TemporaryDirectory(prefix=f"bench-make-{args.target}-") as tmp:
        print(f"make {args.target} in {tmp}", flush=True)
        t0 = time.perf_counter()
        with open(Path(tmp) / "make.log", "w") as log:
            code = subprocess.run(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        results["seconds"] = round(time.perf_counter() - t0, 1)
        results["load_avg_after"] = os.getloadavg()
        results["log"] = (Path(tmp) / "make.log").read_text().splitlines()  # every command's own lines
        if code != 0:
            print((Path(tmp) / "make.log").read_text()[-4000:], file=sys.stderr)
            print(f"make {args.target} exited {code}", file=sys.stderr)
            return 1
        run = Path(tmp) / run_dir
        results["summary"] = json.loads((run / "summary.json").read_text())
        results["metrics"] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        if predictions:
            results["predictions"] = predictions_top1(Path(tmp) / predictions)
    out.write_text(json.dumps(results, indent=2) + "\n")
    summary = results["summary"]
    print(f"untrained val top1 {summary['untrained_val_top1']:.1f}%, last epoch ({summary['model']['epoch']}) "
          f"{summary['final_val_top1']:.1f}%; {results['seconds']:.0f} s; wrote {out}")
    return 0
