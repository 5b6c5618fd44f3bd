"""Evaluation on top of training: zero-shot CLIP, predictions from a run, few-shot and
base-to-novel sweeps and their results table.

- :mod:`.zeroshot`: ``videocoop eval --zero-shot``.
- :mod:`.predict`: ``videocoop predict``.
- :mod:`.sweep`: ``videocoop sweep``.
"""
from .predict import predict
from .sweep import SweepConfig, run_sweep
from .zeroshot import ZeroShotConfig, zero_shot

__all__ = ["SweepConfig", "ZeroShotConfig", "predict", "run_sweep", "zero_shot"]
