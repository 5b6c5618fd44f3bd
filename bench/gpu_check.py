"""``make gpu-check``: everything that proves the GPU path, in one run under ten minutes on one H100.

Each step runs in its own process, its output in ``reports/gpu-check/<step>.log``:

1. ``make test-gpu``: the ``gpu``-marked tests and the audits of our model with CUDA as the
   device (the pytest plugin, ``--audit-device cuda``);
2. ``python -m checks``: the audits of the default model (random ViT-B-32, 101 UCF101
   classes, synthetic features), CUDA as the device the device audits move it to;
3. ``python -m checks --selftest``: every planted fault caught by its audit;
4. ``python -m bench --device cuda --matrix``: 24 cases (101/400 classes x ViT-B-32/B-16/L-14
   x fp32/bf16 x n_ctx 4/16), each timing the seed-faithful baseline and our three paths.

It then writes ``bench/results-gpu.json`` (card, driver, CUDA, torch, every step's time and
status, the test counts, and the benchmark's every timing) and prints one summary. Where no
CUDA device is present it says so and exits 3 before running anything.

Budget (docs/ci.md has the arithmetic): the steps share a deadline of ``BUDGET_S``; each
also has its own cap, so a hung step cannot take the others' time. The benchmark runs
``BENCH_ARGS``: 24 cases x (baseline: 2 warm-up + 3 timed steps; each of 3 paths: 2 warm-up
+ 5 timed) = 624 steps, no loader benchmark (it measures the CPU).
"""
from __future__ import annotations

import argparse
import datetime
import enum
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).with_name("results-gpu.json")
LOGS = Path("reports/gpu-check")  # git-ignored, like every run's reports
#: The whole run, in seconds: ten minutes with half a minute of room.
BUDGET_S = 570
#: Two warm-up steps (the first allocates and picks kernels), five timed steps of our paths,
#: three of the baseline (whose step is the slowest, up to ~0.5 s at 400 classes on ViT-L-14).
BENCH_ARGS = ["--warmup", "2", "--repeats", "5", "--baseline-repeats", "3", "--loader-videos", "0"]


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1  # a step failed or ran out of time: its log says why
    NO_CUDA = 3  # nothing ran: there is no CUDA device here


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    cap_s: int  # the most this step may take; the run's deadline may cut it shorter
    log: str  # file name under the logs folder


def steps(logs: Path) -> list[Step]:
    """The four steps, in order (``make test-gpu`` keeps its recipe in the Makefile); paths
    relative to the repository root, where they run."""
    py = sys.executable
    pytest_args = f"--junitxml={logs / 'pytest-gpu.xml'} --audit-report {logs / 'audits-cuda.md'}"
    return [
        Step("make test-gpu", ["make", "--no-print-directory", "test-gpu", f"ARGS={pytest_args}"], 180, "test-gpu.log"),
        Step("python -m checks", [py, "-m", "checks", "--report", str(logs / "verification-cuda.md"),
                                  "--junit", str(logs / "verification-cuda.xml")], 150, "checks.log"),
        Step("python -m checks --selftest", [py, "-m", "checks", "--selftest"], 120, "selftest.log"),
        Step("python -m bench --matrix", [py, "-m", "bench", "--device", "cuda", "--matrix", *BENCH_ARGS,
                                          "--out", str(logs / "bench.json")], 420, "bench.log"),
    ]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the results file (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--logs", type=Path, default=LOGS, help=f"one log per step (default {LOGS})")
    p.add_argument("--budget", type=int, default=BUDGET_S, help=f"seconds for the whole run (default {BUDGET_S})")
    p.add_argument("--list", action="store_true", help="print the steps and exit (needs no GPU)")
    return p.parse_args(argv)


def no_cuda_message() -> str | None:
    """Why CUDA cannot be used here, in a few lines; None when it can."""
    import torch

    if torch.cuda.is_available():
        return None
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        seen = smi.stdout.strip() if smi.returncode == 0 and smi.stdout.strip() else f"nvidia-smi failed ({smi.returncode})"
    except (OSError, subprocess.TimeoutExpired):
        seen = "no nvidia-smi on this machine"
    return (f"gpu-check: no CUDA device is present, so nothing ran.\n"
            f"  torch {torch.__version__} ({built}): torch.cuda.is_available() is False; {seen}.\n"
            f"  Run `make gpu-check` on a machine with an NVIDIA GPU (one H100: about 6 minutes).")


def machine() -> dict:
    import torch

    from bench.__main__ import gpu_driver

    props = torch.cuda.get_device_properties(0)
    info = {"card": torch.cuda.get_device_name(0), "memory_gib": round(props.total_memory / 2**30, 1),
            "driver": gpu_driver(), "cuda": torch.version.cuda, "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        import open_clip
        info["open_clip"] = open_clip.__version__
    except (ImportError, AttributeError):
        pass
    return info


def run_step(step: Step, deadline: float, logs: Path) -> dict:
    """Run one step to its log, within its cap and the deadline; kill its process group past them."""
    record = {"name": step.name, "command": shlex.join(step.argv), "log": str(logs / step.log)}
    record["command"] = record["command"].replace(sys.executable, "python")
    timeout = min(step.cap_s, deadline - time.monotonic())
    if timeout < 1:
        return record | {"status": "not run: out of time", "ok": False, "seconds": 0.0}
    start = time.monotonic()
    with open(ROOT / logs / step.log, "w") as log:
        try:
            proc = subprocess.Popen(step.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=os.environ | {"PYTHONUNBUFFERED": "1"}, start_new_session=True)
        except OSError as e:
            return record | {"status": f"could not start: {e}", "ok": False, "seconds": 0.0}
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and its children (make -> pytest)
            proc.wait()
            rc, status = None, f"timed out after {timeout:.0f} s"
    return record | {"status": status, "ok": rc == 0, "exit_code": rc, "seconds": round(time.monotonic() - start, 1)}


def _from_root(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _tail(path: str, n: int = 25) -> str:
    lines = (ROOT / path).read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in lines[-n:])


def test_counts(junit: Path) -> dict | None:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def bench_lines(bench: dict) -> list[str]:
    """Per case: the path ``auto`` picks on CUDA against the fastest, and the baseline ratio."""
    lines = []
    for case in bench.get("cases", []):
        rows = {r["path"]: r for r in case["rows"]}
        ours = [r for r in case["rows"] if r["path"] != "seed-faithful"]
        auto = next(r for r in ours if r["auto"])
        fastest = min(ours, key=lambda r: r["median_s"])
        equal = "all equal" if all(r["equal"] for r in case["rows"]) else "NOT EQUAL to the baseline"
        lines.append(f"  {case['label']:46s} baseline {rows['seed-faithful']['median_s'] * 1e3:7.1f} ms; "
                     f"auto {auto['path']} {auto['median_s'] * 1e3:6.2f} ms ({auto['speedup']:.1f}x, "
                     f"{auto['peak_mem_bytes'] / 2**30:.2f} GiB); fastest {fastest['path']} "
                     f"{fastest['median_s'] * 1e3:6.2f} ms; {equal}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    # the steps run from the repository root (where the Makefile is): paths as seen from there
    logs, out = (_from_root(p.resolve()) for p in (args.logs, args.out))
    plan = steps(logs)
    if args.list:
        for s in plan:
            print(f"{s.name:30s} at most {s.cap_s:3d} s: {shlex.join(s.argv).replace(sys.executable, 'python')}")
        print(f"whole run: at most {args.budget} s")
        return Exit.OK
    why = no_cuda_message()
    if why:
        print(why, file=sys.stderr)
        return Exit.NO_CUDA
    (ROOT / logs).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + args.budget
    results = {"command": "python -m bench.gpu_check " + shlex.join(sys.argv[1:] if argv is None else argv),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), "budget_s": args.budget, "steps": []}
    print(f"gpu-check on {results['machine']['card']}: {len(plan)} steps, logs in {logs}/", flush=True)
    for i, step in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {step.name} ...", end=" ", flush=True)
        record = run_step(step, deadline, logs)
        results["steps"].append(record)
        print(f"{record['status']} ({record['seconds']:.0f} s)", flush=True)
    results["seconds"] = round(time.monotonic() - start, 1)
    results["tests"] = test_counts(ROOT / logs / "pytest-gpu.xml")
    bench_file = ROOT / logs / "bench.json"  # what the benchmark finished, even when cut short
    results["bench"] = json.loads(bench_file.read_text()) if bench_file.is_file() else None
    (ROOT / out).write_text(json.dumps(results, indent=2) + "\n")

    ok = all(r["ok"] for r in results["steps"])
    m = results["machine"]
    print(f"\ngpu-check {'OK' if ok else 'FAILED'} in {results['seconds']:.0f} s on {m['card']} "
          f"({m['memory_gib']} GiB, driver {m['driver']}, CUDA {m['cuda']}, torch {m['torch']})")
    for r in results["steps"]:
        print(f"  {r['name']:30s} {r['status']:28s} {r['seconds']:6.0f} s")
    if results["tests"]:
        t = results["tests"]
        print(f"  tests: {t['tests']} run, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped")
    if results["bench"]:
        print(f"  benchmark, {len(results['bench']['cases'])} of 24 cases (median step):")
        print("\n".join(bench_lines(results["bench"])))
    for r in results["steps"]:
        if not r["ok"] and (ROOT / r["log"]).is_file():
            print(f"\n{r['name']}: {r['status']}; the end of {r['log']}:\n{_tail(r['log'])}")
    print(f"wrote {out}")
    return Exit.OK if ok else Exit.FAILED


if __name__ == "__main__":
    sys.exit(main())
