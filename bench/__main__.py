"""``python -m bench``: the seed-faithful baseline and ours, side by side, in one run.

Prints a table and writes ``bench/results.json``. The default is the issue's CPU case:
UCF101's 101 names, ViT-B-32 text tower, n_ctx 16, batch 32 x 8 frames, fp32.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.loader import run_loader
from bench.step import BENCH_PRECISIONS, CLASS_LISTS, TOWERS, VARIANTS, StepCase, matrix, run_case
from videocoop.clip import TINY_MODEL

DEFAULT_OUT = Path(__file__).with_name("results.json")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, choices=sorted(CLASS_LISTS), default=101)
    p.add_argument("--tower", choices=(*TOWERS, TINY_MODEL), default="ViT-B-32", help=f"{TINY_MODEL}: a smoke run")
    p.add_argument("--precision", choices=BENCH_PRECISIONS, default="fp32", help="ours; the baseline is always fp32")
    p.add_argument("--n-ctx", type=int, choices=(4, 16), default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--repeats", type=int, default=5, help="timed steps of each of our paths")
    p.add_argument("--baseline-repeats", type=int, default=3, help="timed steps of the baseline (~12 s each on the CPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--paths", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS), help="our paths to time")
    p.add_argument("--matrix", action="store_true", help="the full GPU matrix: 101/400 classes x B-32/B-16/L-14 x fp32/bf16 x n_ctx 4/16")
    p.add_argument("--compile", action="store_true", help="torch.compile our model's forward")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--loader-videos", type=int, default=4000, help="videos in the loader benchmark; 0 skips it")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def environment(device: str) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        env["driver"] = gpu_driver()
    try:
        import open_clip
        env["open_clip"] = open_clip.__version__
    except (ImportError, AttributeError):
        pass
    return env


def gpu_driver() -> str | None:
    """The NVIDIA driver version nvidia-smi reports (None without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem(row: dict) -> str:
    return f"{row['peak_mem_bytes'] / 2**20:,.0f} MiB"


def render(results: dict, console: Console) -> None:
    for case in results["cases"]:
        table = Table(title=f"Training step: {case['label']} (batch {case['case']['batch']} x {case['case']['frames']})")
        for col in ("path", "median step", "items/s", case["mem_kind"], "vs baseline", "CPU time (ratio)", "max |Δ| text", "max |Δ| logits", "equal"):
            table.add_column(col, justify="left" if col == "path" else "right")
        for row in case["rows"]:
            name = row["path"] + (" (auto)" if row["auto"] else "")
            table.add_row(
                name, f"{row['median_s'] * 1e3:,.1f} ms", f"{row['items_per_s']:,.1f}", _mem(row),
                f"{row['speedup']:.1f}x", f"{row['cpu_s'] * 1e3:,.0f} ms ({row['cpu_speedup']:.1f}x)",
                f"{row['max_abs_diff']:.1e}", f"{row['max_abs_diff_logits']:.1e}",
                "[green]yes[/]" if row["equal"] else f"[red]no (> {case['tolerance']:g})[/]",
            )
        console.print(table)
    loader = results.get("loader")
    if loader:
        table = Table(title=f"Loader: {loader['videos']} videos of [{loader['frames']}, {loader['dim']}] {loader['dtype']}, "
                            f"batch {loader['batch']}, shuffled, DataLoader + collate_samples")
        for col in ("path", "videos/s", "packed is"):
            table.add_column(col, justify="left" if col == "path" else "right")
        for row in loader["rows"]:
            table.add_row(row["path"], f"{row['videos_per_s']:,.0f}", f"{row['packed_speedup']:.1f}x")
        console.print(table)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["extract"]:  # python -m bench extract: the video-to-features pipeline (bench/extract.py)
        from bench.extract import main as extract_main

        return extract_main(argv[1:])
    if argv[:1] == ["distributed"]:  # python -m bench distributed: 1 and 2 processes, with and without sharded text
        from bench.distributed import main as distributed_main

        return distributed_main(argv[1:])
    if argv[:1] == ["decoders"]:  # python -m bench decoders: the PyPI video decoders side by side
        from bench.decoders import main as decoders_main

        return decoders_main(argv[1:])
    if argv[:1] == ["make"]:  # python -m bench make train|demo: a Makefile target end to end, its numbers
        from bench.make_targets import main as make_main

        return make_main(argv[1:])
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=None if sys.stdout.isatty() else 140)
    if args.matrix:
        cases = matrix(args.device)
    else:
        cases = [StepCase(classes=args.classes, tower=args.tower, precision=args.precision, n_ctx=args.n_ctx,
                          batch=args.batch, frames=args.frames, device=args.device)]
    results = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(args.device),
        "cases": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases, 1):
        console.print(f"[bold]{case.label()}[/]" + (f" ({i}/{len(cases)})" if len(cases) > 1 else ""))
        results["cases"].append(run_case(
            case, repeats=args.repeats, baseline_repeats=args.baseline_repeats, warmup=args.warmup,
            variants=tuple(args.paths), compile=args.compile, log=console.print,
        ))
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # a run cut short keeps the cases it finished
    if args.loader_videos:
        console.print("[bold]loader[/]")
        results["loader"] = run_loader(videos=args.loader_videos, log=console.print)
    render(results, console)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
