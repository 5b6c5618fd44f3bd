"""The loader benchmark: per-file reading against the packed split, in one run.

Synthetic videos of ``[frames, dim]`` fp16 features in class folders, written both as
``.pt`` (what ``videocoop synth`` writes) and ``.npy`` (Efficient-Prompt's format), and
packed once; each is read for whole epochs through a ``DataLoader`` with
``collate_samples``, batch 32, shuffled, training-mode frame sampling, no workers.
The files sit in the page cache, so per-file numbers are its best case.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from videocoop.data import FeatureDataset, PackedFeatureDataset, collate_samples, pack


def write_split(root: Path, videos: int, classes: int, frames: int, dim: int, suffix: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for v in range(videos):
        folder = root / f"class{v % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        x = rng.standard_normal((frames, dim)).astype(np.float16)  # [T, D]
        if suffix == ".npy":
            np.save(folder / f"v{v:06d}.npy", x)
        else:
            torch.save(torch.from_numpy(x), folder / f"v{v:06d}.pt")
    return root


def epoch_rate(dataset, batch: int, epochs: int) -> list[float]:
    """Videos per second of each full pass over ``dataset``."""
    rates = []
    for e in range(epochs):
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=collate_samples,
                            generator=torch.Generator().manual_seed(e))
        n, t0 = 0, time.perf_counter()
        for features, _, _ in loader:
            n += features.shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return rates


def run_loader(videos: int = 4000, classes: int = 100, frames: int = 8, dim: int = 512, batch: int = 32,
               epochs: int = 3, log=print) -> dict:
    """Per-file (.pt, .npy) and packed loading of the same videos; videos/s and the ratio to each per-file row."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="videocoop-loader-") as tmp:
        tmp = Path(tmp)
        sources = {s: write_split(tmp / s.strip("."), videos, classes, frames, dim, s) for s in (".pt", ".npy")}
        pack(sources[".npy"], tmp / "packed")
        datasets = {f"per-file {s}": FeatureDataset(p, num_frames=frames, train=True, cache=False) for s, p in sources.items()}
        datasets["packed (memmap, fp16)"] = PackedFeatureDataset(tmp / "packed", num_frames=frames, train=True)
        for name, dataset in datasets.items():
            log(f"  loader: {name}, {epochs} epochs of {videos} videos")
            rates = epoch_rate(dataset, batch, epochs)
            rows.append({"path": name, "videos_per_s": statistics.median(rates), "rates": rates})
    packed = rows[-1]["videos_per_s"]
    for row in rows:
        row["packed_speedup"] = packed / row["videos_per_s"]
    return {"videos": videos, "classes": classes, "frames": frames, "dim": dim, "dtype": "float16", "batch": batch,
            "rows": rows}
