"""Regenerate the two sweep tables of docs/protocols.md ("What a sweep prints: synthetic data").

    python docs/studies/sweep_synth.py        # ~15-25 minutes on our shared 2-core CPU machine

Runs, in a temporary folder, the three commands the page shows (synthetic data of 10 classes
with the tiny random-weight CLIP, the few-shot sweep, the base-to-novel sweep) through
videocoop's own CLI, and writes docs/studies/sweep_synth.json: the commands, the machine and
its load average, each sweep's wall time, its ``results.md`` (the table the page quotes) and
its ``results.csv`` rows at full precision.
"""
from __future__ import annotations

import csv
import datetime
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]  # this checkout's packages

from bench.__main__ import environment  # noqa: E402
from videocoop.cli import main  # noqa: E402
from videocoop.utils.files import write_json  # noqa: E402

OUT = Path(__file__).with_name("sweep_synth.json")
SYNTH = "videocoop synth --out s10 --clip-model videocoop-tiny --n-classes 10 --train-per-class 16 --val-per-class 12 --noise 6"
SWEEP = ("videocoop sweep --feature-dir s10/train --val-feature-dir s10/val --initial-prompts-file s10/custom_prompts.json "
         "--epochs 20 --lr 0.01 --batch-size 8")
SWEEPS = {
    "few-shot": f"{SWEEP} --shots 2,4,8,16 --seeds 1,2,3 --output-dir sw10",
    "base-to-novel": f"{SWEEP} --shots 8 --seeds 1,2,3 --base-classes half --output-dir sw10b2n",
}


def run(command: str) -> float:
    """One ``videocoop ...`` command line, in-process; its wall time in seconds."""
    t0 = time.perf_counter()
    code = main(shlex.split(command)[1:])
    if code != 0:
        raise SystemExit(f"{command!r} exited {code}")
    return time.perf_counter() - t0


def main_() -> None:
    results = {
        "commands": [SYNTH, *SWEEPS.values()],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment("cpu"),
        "sweeps": {},
    }
    with tempfile.TemporaryDirectory(prefix="sweep-synth-") as tmp:
        os.chdir(tmp)
        run(SYNTH)
        for name, command in SWEEPS.items():
            seconds = run(command)
            root = Path(shlex.split(command)[-1])
            with open(root / "results.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            results["sweeps"][name] = {"command": command, "seconds": round(seconds, 1),
                                       "results_md": (root / "results.md").read_text(), "results_csv": rows}
            print(f"{name} ({seconds:.0f} s):\n{(root / 'results.md').read_text()}", flush=True)
    results["load_avg_after"] = os.getloadavg()
    write_json(OUT, results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main_()
