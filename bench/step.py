"""The training-step benchmark: the seed-faithful baseline against our paths, in one run.

A step is what training does per batch: class text features from the learned context
(the whole text tower over every class prompt), video features ``[B, T, D]``, logits,
cross-entropy, backward into the context, an optimiser step. Random CLIP weights: the
cost does not depend on their values.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import threading
import time
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from bench.baseline import SeedFaithfulCLIP
from videocoop.clip import load_clip
from videocoop.data import KINETICS400, UCF101
from videocoop.model import VideoFeatureCLIP
from videocoop.utils.errors import VideoCoopError

CLASS_LISTS = {101: UCF101, 400: KINETICS400}
TOWERS = ("ViT-B-32", "ViT-B-16", "ViT-L-14")
BENCH_PRECISIONS = ("fp32", "bf16")
# Our variants: the text encoder's shared_prefix mode each one pins.
VARIANTS = {"truncated": "off", "shared-concat": "concat", "shared-split": "split"}
BASELINE = "seed-faithful"
# Outputs must agree this closely with the fp32 baseline (normalised text features).
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}


@dataclass(frozen=True)
class StepCase:
    """One benchmark configuration (the issue's defaults: UCF101 scale on this CPU)."""

    classes: int = 101  # 101 (UCF101 names) or 400 (Kinetics-400 names)
    tower: str = "ViT-B-32"  # text tower of this open_clip model, random weights
    precision: str = "fp32"  # ours: fp32, or bf16 autocast with fp32 context; the baseline is always fp32
    n_ctx: int = 16  # CoOp's default context length
    batch: int = 32  # videos per step
    frames: int = 8  # frames per video
    device: str = "cpu"

    def check(self) -> None:
        if self.classes not in CLASS_LISTS:
            raise VideoCoopError(f"classes must be one of {sorted(CLASS_LISTS)}, got {self.classes}")
        if self.precision not in BENCH_PRECISIONS:
            raise VideoCoopError(f"unknown precision {self.precision!r}; choose one of {', '.join(BENCH_PRECISIONS)}")

    def label(self) -> str:
        return f"{self.classes} classes, {self.tower}, n_ctx {self.n_ctx}, {self.precision}, {self.device}"


def matrix(device: str) -> list[StepCase]:
    """The full GPU matrix of issue 5: classes x towers x precisions x n_ctx."""
    return [
        StepCase(classes=c, tower=t, precision=p, n_ctx=n, device=device)
        for c in (101, 400) for t in TOWERS for p in BENCH_PRECISIONS for n in (4, 16)
    ]


def _trim() -> None:
    """Hand freed heap back to the OS (glibc), so the RSS a path starts from is its own."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory over a block: CUDA's allocator peak, or sampled RSS above the start on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self.kind = "peak CUDA alloc" if device.type == "cuda" else "peak RSS Δ"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        gc.collect()
        _trim()
        self._start = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self._start)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() - self._start)
        return False


def build(case: StepCase, seed: int = 0):
    """The baseline and our model on ``case.device``, sharing one frozen text tower and one initial context."""
    case.check()
    names = CLASS_LISTS[case.classes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip_model, tokenizer = load_clip(case.tower, seed=seed)  # on the CPU; only the text modules move
    baseline = SeedFaithfulCLIP(names, clip_model, tokenizer, n_ctx=case.n_ctx, text_pool="mean")
    ours = VideoFeatureCLIP(names, clip_model, tokenizer, n_ctx=case.n_ctx, text_pool="mean")
    with torch.no_grad():
        baseline.prompt_learner.ctx.copy_(ours.prompt_learner.ctx)
    device = torch.device(case.device)
    return baseline.to(device), ours.to(device)


def _autocast(case: StepCase, ours: bool):
    if ours and case.precision == "bf16":
        return torch.autocast(torch.device(case.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model, case: StepCase, ours: bool, seed: int = 0, compile: bool = False):
    """A closure running one training step; no host sync inside (the timer syncs around it)."""
    device = torch.device(case.device)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(case.batch, case.frames, model.embed_dim, generator=g).to(device)  # [B, T, D]
    labels = torch.randint(0, case.classes, (case.batch,), generator=g).to(device)  # [B]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9)  # CoOp's optimiser
    forward = torch.compile(model) if compile else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(case, ours):
            logits = forward(features)  # [B, n_cls]
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return logits.detach()

    return step


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, device: torch.device, repeats: int, warmup: int):
    """Wall and process CPU seconds per step (after ``warmup`` untimed steps), the peak memory
    while timing, and the first step's logits.

    CPU time counts only this process, so on a machine shared with other jobs it is the
    steadier figure (with one torch thread it equals the wall time of a quiet machine).
    """
    first = step().float()  # [B, n_cls], from the initial context: compared across paths
    for _ in range(warmup - 1):
        step()
    _sync(device)
    times, cpu_times = [], []
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    return times, cpu_times, mem.peak, first


def text_features(model, case: StepCase, ours: bool) -> torch.Tensor:
    with torch.no_grad(), _autocast(case, ours):
        return model.encode_text().float()  # [n_cls, E], normalised


def run_case(case: StepCase, repeats: int = 5, baseline_repeats: int = 3, warmup: int = 1,
             variants=tuple(VARIANTS), compile: bool = False, log=print) -> dict:
    """Time the baseline and each of our variants on one case, comparing their outputs in the same run.

    Text features are compared before timing (eager); the logits of each path's first
    step (the function timed, compiled if asked) against the baseline's first step
    (same initial context, same batch).

    Returns:
        a dict: the case, the path ``auto`` picks on this device, and one row per path
        (median seconds per step, items/s, peak memory, ratio to the baseline, max abs
        difference of normalised text features and of first-step logits from the
        baseline's, and whether both are within tolerance).
    """
    device = torch.device(case.device)
    baseline, ours = build(case)
    reference = text_features(baseline, case, ours=False)
    scale = baseline.logit_scale.exp().item()
    auto = ours.text_encoder.shared_mode(device, ours.prompt_learner.shared_prefix_len)
    rows = []
    for name in (BASELINE, *variants):
        is_ours = name != BASELINE
        model = ours if is_ours else baseline
        if is_ours:
            model.text_encoder.shared_prefix = VARIANTS[name]
        with torch.no_grad():
            ctx0 = model.prompt_learner.ctx.detach().clone()
        diff = (text_features(model, case, is_ours) - reference).abs().max().item()
        log(f"  {name}: timing {baseline_repeats if not is_ours else repeats} steps after {warmup} warm-up")
        step = make_step(model, case, is_ours, compile=compile and is_ours)
        times, cpu_times, peak, logits = time_step(step, device, baseline_repeats if not is_ours else repeats, max(warmup, 1))
        if not is_ours:
            reference_logits = logits
        logit_diff = (logits - reference_logits).abs().max().item()
        with torch.no_grad():
            model.prompt_learner.ctx.copy_(ctx0)  # the next variant starts from the same context
        median = statistics.median(times)
        rows.append({
            "path": name,
            "auto": is_ours and VARIANTS[name] == auto,
            "median_s": median,
            "times_s": times,
            "cpu_s": statistics.median(cpu_times),
            "cpu_times_s": cpu_times,
            "items_per_s": case.batch / median,
            "peak_mem_bytes": peak,
            "max_abs_diff": diff,
            "max_abs_diff_logits": logit_diff,
            # Logits are cosines scaled by exp(logit_scale): allow the text tolerance at that scale.
            "equal": diff <= TOLERANCE[case.precision] and logit_diff <= TOLERANCE[case.precision] * scale,
        })
        del step
        gc.collect()
    base = rows[0]["median_s"]
    for row in rows:
        row["speedup"] = base / row["median_s"]
        row["cpu_speedup"] = rows[0]["cpu_s"] / row["cpu_s"]
    return {"case": asdict(case), "label": case.label(), "auto_path": auto, "mem_kind": PeakMemory(device).kind,
            "tolerance": TOLERANCE[case.precision], "compile": compile, "rows": rows}
