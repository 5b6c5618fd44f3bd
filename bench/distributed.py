"""``python -m bench distributed``: the training step in 1 and 2 processes, with and without
sharded text.

Each process runs what a ``torchrun`` run of ``videocoop train`` runs per step: its share of
the global batch through :class:`~videocoop.train.ddp.TrainStep` under
DistributedDataParallel (gloo on the CPU, nccl on CUDA), the loss, backward, an SGD step.
The processes are started with ``torch.multiprocessing`` (the same process group torchrun
would set up, without relaunching Python per case). On a CPU the processes share the
machine's cores: 1 process gets every thread, 2 processes half each, so the ratio, not the
absolute time, says what the sharding buys. Prints a table and writes
``bench/results-distributed.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

DEFAULT_OUT = Path(__file__).with_name("results-distributed.json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, case: dict, port: int, results) -> None:
    from videocoop.clip import load_clip
    from videocoop.data import KINETICS400, UCF101
    from videocoop.model import VideoFeatureCLIP
    from videocoop.train.ddp import TrainStep, wrap
    from videocoop.utils.distributed import World

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device(case["device"] if case["device"] == "cpu" else f"cuda:{rank}")
    if size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size)
    torch.set_num_threads(max(1, case["threads"] // size))  # the machine's threads shared out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip, tokenizer = load_clip(case["tower"], seed=0, device=device)
    names = {101: UCF101, 400: KINETICS400}[case["classes"]]
    torch.manual_seed(0)
    model = VideoFeatureCLIP(names, clip, tokenizer, n_ctx=16).to(device)
    world = World(rank, size)
    step = model
    if size > 1:
        step = wrap(TrainStep(model, world, case["shard_text"]), device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(case["batch"], case["frames"], model.embed_dim, generator=g)[rank::size].to(device)
    labels = torch.randint(0, len(names), (case["batch"],), generator=g)[rank::size].to(device)
    times = []
    for i in range(case["warmup"] + case["steps"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = step(features)
        loss = F.cross_entropy(logits, labels, reduction="sum") * size / case["batch"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if size > 1:
            dist.barrier()  # a step ends when the slowest process ends it
        if i >= case["warmup"]:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        results.put(statistics.median(times))
    if size > 1:
        dist.destroy_process_group()


def run(case: dict) -> float:
    """Median step time (seconds) of one case, its processes started here."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = _free_port()
    mp.start_processes(_worker, args=(case["processes"], case, port, results), nprocs=case["processes"],
                       start_method="spawn")
    return results.get()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench distributed", description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", choices=(101, 400), default=[101, 400])
    p.add_argument("--tower", default="ViT-B-32")
    p.add_argument("--batch", type=int, default=32, help="the global batch")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    p.add_argument("--processes", type=int, default=2, help="the multi-process cases")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads shared out among the processes")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main(argv=None) -> int:
    from bench.__main__ import environment

    args = parse_args(argv)
    if args.device.startswith("cuda") and torch.cuda.device_count() < args.processes:
        print(f"python -m bench distributed: {args.processes} processes on CUDA need {args.processes} GPUs; "
              f"{torch.cuda.device_count()} here", file=sys.stderr)
        return 4
    console = Console(width=None if sys.stdout.isatty() else 140)
    rows = []
    for classes in args.classes:
        base = {"classes": classes, "tower": args.tower, "batch": args.batch, "frames": args.frames, "device": args.device,
                "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
        one = None
        for processes, shard in ((1, False), (args.processes, False), (args.processes, True)):
            case = {**base, "processes": processes, "shard_text": shard}
            console.print(f"{classes} classes, {processes} process(es), text {'sharded' if shard else 'whole'} ...")
            seconds = run(case)
            one = seconds if processes == 1 else one
            rows.append({**case, "median_s": seconds, "vs_one_process": one / seconds})
    table = Table(title=f"Training step, {args.tower}, global batch {args.batch} x {args.frames}, {args.device}")
    for col in ("classes", "processes", "text", "median step", "vs 1 process"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["classes"]), str(r["processes"]), "sharded" if r["shard_text"] else "every process",
                      f"{r['median_s'] * 1e3:,.0f} ms", f"{r['vs_one_process']:.2f}x")
    console.print(table)
    results = {
        "command": "python -m bench distributed " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(args.device),
        "rows": rows,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
