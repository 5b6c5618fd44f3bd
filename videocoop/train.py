"""Training: CoOp's recipe on feature folders, with checkpoints that resume exactly.

The loop knows nothing about prompts beyond calling the model: ``encode_text()`` once
per step (the context changes every step) and once per evaluation, then
``logits(encode_video(features), text)`` per batch.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .clip import PRECISIONS, embed_dim, load_clip, weights_id
from .data import INFO_FILE, FeatureDataset, check_feature_info, collate_samples, read_feature_info
from .errors import VideoCoopError
from .files import atomic_write, load_error, read_json_object, write_json, write_text
from .model import TEMPORAL_AGGS, VideoFeatureCLIP
from .packed import open_feature_dataset
from .prompts import POSITIONS, PromptsFile
from .text_encoder import POOLS

OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PROGRESS = ("auto", "rich", "plain", "none")
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
# Flags that change how a run executes, not what it computes: a resumed or re-run output
# directory may differ in these.
_EXECUTION_KEYS = ("resume", "eval_only", "overwrite", "device", "num_workers", "progress", "output_dir", "check_every")
# Actions of one invocation, not settings of a run: never read back from a config file.
_ACTION_KEYS = ("resume", "eval_only", "overwrite")
# The files a training run writes into its output_dir (--overwrite deletes exactly these).
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "log.txt", "eval.json", CHECKPOINT_LAST, CHECKPOINT_BEST)
# Paths compared resolved: ./k and /abs/k/ name the same folder.
_PATH_KEYS = ("feature_dir", "val_feature_dir", "initial_prompts_file")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; lower the learning rate or use fp32.

    Attributes:
        step: the first step (1-based, within the epoch) whose loss was not finite.
        loss: that loss (nan, inf or -inf).
    """

    def __init__(self, message: str, step: int | None = None, loss: float | None = None):
        super().__init__(message)
        self.step, self.loss = step, loss


@dataclass
class TrainConfig:
    """Everything a training run depends on: one field per ``videocoop train`` flag.

    Defaults follow CoOp (Zhou et al., 2022) where it has one: SGD, lr 0.002, momentum
    0.9, weight decay 5e-4, cosine schedule, one warm-up epoch at a constant 1e-5,
    batch 32, 16 context vectors.
    """

    feature_dir: str | None = None  # training features: <dir>/<class>/<video>.pt|.npy
    val_feature_dir: str | None = None  # validation features, same classes; None: no validation
    initial_prompts_file: str | None = None  # JSON prompts file (README "The custom prompts file")
    output_dir: str = "output/videocoop"  # config, metrics, checkpoints, log go here
    epochs: int = 50  # the seed's command; CoOp uses 200 for 16 shots, 50 for 1 shot
    batch_size: int = 32  # CoOp
    lr: float = 0.002  # CoOp's SGD learning rate
    optimizer: str = "sgd"  # sgd (CoOp) | adamw (Efficient-Prompt)
    momentum: float = 0.9  # SGD momentum (CoOp)
    weight_decay: float = 5e-4  # CoOp
    warmup_epochs: int = 1  # CoOp: one epoch at a constant warmup_lr before the cosine
    warmup_lr: float = 1e-5  # CoOp's constant warm-up learning rate
    n_ctx: int = 16  # context vectors (CoOp); an initial phrase sets it to its token count
    csc: bool = False  # class-specific context; per-class phrases in the prompts file imply it
    class_token_position: str = "end"  # end | middle | front (CoOp)
    temporal_agg: str = "mean"  # mean | max | transformer over frames
    text_pool: str = "eot"  # eot (CLIP) | mean (the seed report's pooling)
    num_frames: int | None = None  # sample this many frames per video; None: all, padded and masked (eval_only: the run's)
    clip_model: str | None = None  # open_clip name; None: from features.json
    pretrained: str | None = None  # open_clip pretrained tag in the local cache; None: from features.json
    clip_checkpoint: str | None = None  # local CLIP weights file (wins over pretrained)
    clip_seed: int = 0  # seed of random CLIP weights when there are no weights (features.json's random:<seed> wins)
    precision: str | None = None  # fp32 | fp16 | bf16 (CLIP weights in half, fp32 context; CoOp's default is fp16) | amp; None: fp32 (eval_only: the run's)
    num_workers: int = 0  # DataLoader workers; features are small and cached, 0 is usually fastest
    seed: int = 0  # context init, shuffling, frame sampling
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    resume: bool = False  # continue from output_dir/checkpoint_last.pt
    eval_only: bool = False  # evaluate output_dir/checkpoint_best.pt (or the initial prompts) and stop
    overwrite: bool = False  # replace the run in output_dir (its files deleted once the new run is built and checked)
    progress: str = "auto"  # auto (rich bars on a terminal, plain lines otherwise) | rich | plain | none
    check_every: int = 10  # steps between reads of the on-device NaN/inf flag: one host sync each, so not every step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        """Build from a dict, rejecting unknown keys.

        Raises:
            VideoCoopError: unknown keys, listing the valid ones.
        """
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise VideoCoopError(f"unknown config key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a run's ``config.json`` (or any JSON object of config keys) as the settings of
        a new run; the actions of the run that wrote it (resume, eval_only, overwrite) are not
        carried over.

        Raises:
            VideoCoopError: an unreadable file, or unknown keys.
        """
        d = read_json_object(path, "a config file holds a JSON object of `videocoop train` settings")
        try:
            return cls.from_dict({k: v for k, v in d.items() if k not in _ACTION_KEYS})
        except VideoCoopError as e:
            raise VideoCoopError(f"{path}: {e}") from e

    def check(self) -> None:
        """Validate choices and ranges before anything is loaded.

        Raises:
            VideoCoopError: naming the bad value and the valid options.
        """
        choices = {
            "optimizer": OPTIMIZERS, "precision": PRECISIONS, "class_token_position": POSITIONS,
            "temporal_agg": TEMPORAL_AGGS, "text_pool": POOLS, "progress": PROGRESS,
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid and not (key == "precision" and self.precision is None):
                raise VideoCoopError(f"unknown {key} {getattr(self, key)!r}; choose one of {', '.join(valid)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "n_ctx": self.n_ctx,
                    "check_every": self.check_every}
        if self.num_frames is not None:
            positive["num_frames"] = self.num_frames
        for key, value in positive.items():
            if value < 1:
                raise VideoCoopError(f"{key} must be >= 1, got {value}")
        for key in ("lr", "warmup_lr", "weight_decay", "momentum", "warmup_epochs", "num_workers"):
            if getattr(self, key) < 0:
                raise VideoCoopError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not self.feature_dir:
            raise VideoCoopError("no training features: pass --feature-dir DIR (a folder of <class>/<video>.pt|.npy)")
        for key in ("feature_dir", "val_feature_dir", "initial_prompts_file"):
            path = getattr(self, key)
            if path and not os.path.exists(path):
                raise VideoCoopError(f"{key.replace('_', '-')} {path} does not exist")
        if self.resume and self.eval_only:
            raise VideoCoopError("--resume and --eval-only exclude each other")
        if self.resume and self.overwrite:
            raise VideoCoopError("--resume continues the run in --output-dir, --overwrite replaces it: pass one of them")


# --------------------------------------------------------------------------- building


@dataclass
class Built:
    """What :func:`build` made from a config: everything a run needs, checked."""

    cfg: TrainConfig  # resolved: the CLIP named, its weights fixed
    device: torch.device
    clip_model: nn.Module
    tokenizer: object
    model: VideoFeatureCLIP
    train_set: FeatureDataset
    val_set: FeatureDataset | None
    classnames: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU.

    Raises:
        VideoCoopError: an unknown device, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise VideoCoopError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}") from e
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])
    if device.type not in available:
        raise VideoCoopError(f"device {name!r} asked for, but it is not available here; available: {', '.join(available)} (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise VideoCoopError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def _default_precision(cfg: TrainConfig) -> TrainConfig:
    """``precision`` None (not given) is fp32 once the run's own value is no longer wanted."""
    return cfg if cfg.precision is not None else dataclasses.replace(cfg, precision="fp32")


def resolve_clip(cfg: TrainConfig, info: Mapping | None) -> TrainConfig:
    """Fill in the CLIP from ``features.json`` where the config leaves it open.

    Raises:
        VideoCoopError: no CLIP named anywhere, or the features need a checkpoint file
            that was not given.
    """
    where = Path(cfg.feature_dir) / INFO_FILE
    clip_model = cfg.clip_model or (info or {}).get("clip_model")
    if clip_model is None:
        raise VideoCoopError(
            f"{cfg.feature_dir} has no {INFO_FILE} saying which CLIP made its features; pass --clip-model NAME "
            f"(and --pretrained TAG or --clip-checkpoint FILE for real weights)"
        )
    out = dataclasses.replace(cfg, clip_model=clip_model)
    if cfg.pretrained or cfg.clip_checkpoint or info is None or "weights" not in info:
        return out
    weights = str(info["weights"])
    if weights.startswith("random:"):
        seed = weights.split(":", 1)[1]
        if not seed.isdigit():
            raise VideoCoopError(f"{where} has weights {weights!r}; random weights are written random:<integer seed>")
        return dataclasses.replace(out, clip_seed=int(seed))
    if weights.startswith("sha256:"):
        raise VideoCoopError(
            f"{where} says the features were made with a CLIP checkpoint file ({weights}); pass it with --clip-checkpoint FILE"
        )
    return dataclasses.replace(out, pretrained=weights)


def build(cfg: TrainConfig) -> Built:
    """Load CLIP, check and load every feature file, build the model on its device.

    Everything that can be wrong with the inputs is found here, before a single step.

    Raises:
        VideoCoopError: bad config, missing CLIP identity, a features.json that names
            another CLIP, any bad feature file, a prompts file naming unknown classes.
    """
    cfg = _default_precision(cfg)
    cfg.check()
    device = resolve_device(cfg.device)
    train_info = read_feature_info(cfg.feature_dir)
    cfg = resolve_clip(cfg, train_info)
    prompts = PromptsFile.load(cfg.initial_prompts_file) if cfg.initial_prompts_file else None
    load_precision = "fp32" if cfg.precision == "amp" else cfg.precision
    clip_model, tokenizer = load_clip(
        cfg.clip_model, pretrained=cfg.pretrained, checkpoint=cfg.clip_checkpoint, device="cpu",
        precision=load_precision, seed=cfg.clip_seed,
    )
    dim = embed_dim(clip_model)
    weights = weights_id(cfg.pretrained, cfg.clip_checkpoint, cfg.clip_seed)
    val_info = None
    if cfg.val_feature_dir:
        val_info = read_feature_info(cfg.val_feature_dir)
    for root, info in ((cfg.feature_dir, train_info), (cfg.val_feature_dir, val_info)):
        if info is not None:
            check_feature_info(info, cfg.clip_model, weights, dim, where=str(Path(root) / INFO_FILE))
    # per-file folders or packed splits (`videocoop pack`), whichever the folder holds
    train_set = open_feature_dataset(cfg.feature_dir, num_frames=cfg.num_frames, train=True, dim=dim)
    classnames = train_set.classnames
    val_set = None
    if cfg.val_feature_dir:
        val_set = open_feature_dataset(cfg.val_feature_dir, classnames=classnames, num_frames=cfg.num_frames, dim=dim)
    prompt_kwargs = prompts.prompt_kwargs(classnames) if prompts else {}
    csc = cfg.csc or (prompts is not None and prompts.csc)
    torch.manual_seed(cfg.seed)  # random context init
    model = VideoFeatureCLIP(
        classnames, clip_model, tokenizer, n_ctx=cfg.n_ctx, csc=csc, class_token_position=cfg.class_token_position,
        temporal_agg=cfg.temporal_agg, text_pool=cfg.text_pool, **prompt_kwargs,
    ).to(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    # what the run really uses: a prompts file sets n_ctx (its phrase's tokens) and may imply csc
    cfg = dataclasses.replace(cfg, n_ctx=model.prompt_learner.n_ctx, csc=bool(model.prompt_learner.csc), device=str(device))
    return Built(cfg, device, clip_model, tokenizer, model, train_set, val_set, list(classnames))


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (CoOp) or AdamW over the trainable parameters only."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise VideoCoopError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """CoOp's schedule, stepped per batch: ``warmup_epochs`` at a constant ``warmup_lr``,
    then a cosine from ``lr`` to 0 over the remaining epochs."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    warm_factor = cfg.warmup_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return warm_factor
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- the loop


class TrainResult(NamedTuple):
    loss: float  # mean cross-entropy over the epoch's videos
    top1: float  # training accuracy, percent


class EvalResult(NamedTuple):
    loss: float  # mean cross-entropy
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    per_class: dict[str, float]  # class name -> top-1 percent (classes without videos left out)


def _amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 wherever it runs (the CPU, CUDA from Ampere on): fp32's range, so no loss
    scaling; fp16 with a GradScaler only on older GPUs."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _autocast(device: torch.device, precision: str):
    """Autocast for ``amp`` (the context and its gradients stay fp32)."""
    if precision != "amp":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=_amp_dtype(device))


def _to_device(batch, device: torch.device):
    features, labels, meta = batch
    mask = meta.get("mask") if isinstance(meta, Mapping) else None
    non_blocking = device.type == "cuda"
    features = features.to(device, non_blocking=non_blocking)  # [B, T, D]
    labels = labels.to(device, non_blocking=non_blocking)  # [B]
    if mask is not None:
        mask = mask.to(device, non_blocking=non_blocking)  # [B, T]
    return features, labels, mask


def train_one_epoch(
    model: VideoFeatureCLIP,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    scheduler=None,
    *,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    on_batch: Callable[[int, int, float, float, float, int], None] | None = None,
    check_every: int = 10,
) -> TrainResult:
    """One pass over ``loader``: per batch, text features once, then the video features.

    Args:
        model: a :class:`~videocoop.model.VideoFeatureCLIP` (or anything with
            ``encode_text``, ``encode_video`` and ``logits``).
        loader: yields ``(features [B, T, D], labels [B], meta)``; ``meta["mask"]`` when padded.
        optimizer: over the trainable parameters.
        device: where the model is.
        scheduler: stepped after every batch.
        precision: ``amp`` autocasts the step; the others need nothing here.
        scaler: a GradScaler for fp16 autocast on CUDA.
        on_batch: called as ``on_batch(step, steps, loss, top1, lr, items)`` for progress.
        check_every: read the on-device "loss not finite" flag every this many steps (and
            every step when ``on_batch`` reads the loss anyway).

    Raises:
        TrainingDiverged: a loss became NaN or inf; ``.step`` says which step first did.
    """
    device = torch.device(device)
    model.train()
    if hasattr(model, "text_encoder"):
        model.text_encoder.eval()  # frozen CLIP: no dropout, whatever the mode of the rest
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    # the first step (0-based) whose loss was not finite, -1 while none: kept on the device
    # and read every check_every steps, so a NaN stops the run within a few steps without
    # a host sync per step
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bad_loss = torch.zeros((), device=device)
    seen = 0
    steps = len(loader)
    for step, batch in enumerate(loader):
        features, labels, mask = _to_device(batch, device)
        with _autocast(device, precision):
            text = model.encode_text()  # [n_cls, E]: the context changed at the last step, so once per step
            logits = model.logits(model.encode_video(features, mask), text)  # [B, n_cls]
            loss = F.cross_entropy(logits.float(), labels)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses, before the scheduler moves it
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = labels.shape[0]
        hit = logits.argmax(-1) == labels  # [B]
        first_bad = (bad_step < 0) & ~torch.isfinite(loss.detach())
        bad_step.masked_fill_(first_bad, step)
        bad_loss = torch.where(first_bad, loss.detach(), bad_loss)
        loss_sum += loss.detach() * n
        correct += hit.sum()
        seen += n
        if on_batch is not None:
            # a host sync per batch, only when someone is watching
            on_batch(step + 1, steps, loss.item(), 100.0 * hit.float().mean().item(), lr, n)
        if on_batch is not None or (step + 1) % check_every == 0:
            _raise_if_diverged(bad_step, bad_loss, steps)  # a host sync every check_every steps
    _raise_if_diverged(bad_step, bad_loss, steps)  # the steps since the last read
    return TrainResult(loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1))


def _raise_if_diverged(bad_step: torch.Tensor, bad_loss: torch.Tensor, steps: int) -> None:
    step = int(bad_step)  # the host sync
    if step >= 0:
        value = float(bad_loss)
        raise TrainingDiverged(f"training loss became {value} at step {step + 1} of {steps}", step + 1, value)


@torch.no_grad()
def validate(
    model: VideoFeatureCLIP,
    loader,
    device: torch.device | str,
    classnames: list[str],
    *,
    precision: str = "fp32",
) -> EvalResult:
    """Loss, top-1, top-5 and per-class top-1 (percent) over ``loader``.

    The class text features do not depend on the videos: computed once per call.
    """
    device = torch.device(device)
    model.eval()
    n_cls = len(classnames)
    k = min(5, n_cls)
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    hits = torch.zeros(n_cls, device=device, dtype=torch.long)
    counts = torch.zeros(n_cls, device=device, dtype=torch.long)
    with _autocast(device, precision):
        text = model.encode_text()  # [n_cls, E], once per evaluation
    for batch in loader:
        features, labels, mask = _to_device(batch, device)
        with _autocast(device, precision):
            logits = model.logits(model.encode_video(features, mask), text).float()  # [B, n_cls]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        topk = logits.topk(k, dim=-1).indices  # [B, k]
        right = topk[:, 0] == labels  # [B]
        top1 += right.sum()
        top5 += (topk == labels[:, None]).any(-1).sum()
        hits.index_add_(0, labels, right.long())
        counts.index_add_(0, labels, torch.ones_like(labels))
    total = int(counts.sum())
    if total == 0:
        raise VideoCoopError("nothing to evaluate: the validation loader is empty")
    per_class = {c: 100.0 * int(h) / int(n) for c, h, n in zip(classnames, hits.tolist(), counts.tolist()) if n}
    return EvalResult(loss_sum.item() / total, 100.0 * top1.item() / total, 100.0 * top5.item() / total, per_class)


# --------------------------------------------------------------------------- checkpoints


def _rng_state(loader_generator: torch.Generator | None) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
        "loader": None if loader_generator is None else loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping, loader_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if loader_generator is not None and state.get("loader") is not None:
        loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state) -> Path:
    """Write ``state`` (tensors, dicts, plain values) atomically: a temporary file, synced to
    disk, then a rename. A run killed (or a machine losing power) mid-write keeps the
    previous checkpoint intact.
    """
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only).

    Raises:
        VideoCoopError: a missing or unreadable file.
    """
    if not os.path.isfile(path):
        raise VideoCoopError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many types
        raise load_error(path, e, "the tensors and plain values videocoop train saves") from e


# --------------------------------------------------------------------------- progress and logging


class Reporter:
    """Progress on the console (rich bars on a terminal, plain lines otherwise) and log.txt."""

    def __init__(self, mode: str = "auto", log_path: Path | None = None):
        if mode == "auto":
            mode = "rich" if sys.stdout.isatty() else "plain"
        self.mode = mode
        self.log_file = open(log_path, "a", encoding="utf-8") if log_path is not None else None
        self._progress = None
        self._epoch_task = self._batch_task = None
        self._t0 = time.perf_counter()
        self._items = 0

    @property
    def shows_batches(self) -> bool:
        """Whether :meth:`batch` displays anything: a host sync per batch only then."""
        return self.mode == "rich"

    def log(self, message: str) -> None:
        if self.log_file is not None:
            self.log_file.write(message + "\n")
            self.log_file.flush()
        if self.mode == "rich" and self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        elif self.mode != "none":
            print(message, flush=True)

    def start(self, epochs: int, first_epoch: int) -> None:
        if self.mode != "rich":
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), transient=False,
        )
        self._progress.start()
        self._epoch_task = self._progress.add_task("epochs", total=epochs, completed=first_epoch - 1, stats="")

    def begin_epoch(self, epoch: int, steps: int) -> None:
        self._t0, self._items = time.perf_counter(), 0
        if self._progress is None:
            return
        if self._batch_task is not None:
            self._progress.remove_task(self._batch_task)
        self._batch_task = self._progress.add_task(f"epoch {epoch}", total=steps, stats="")

    def batch(self, step: int, steps: int, loss: float, top1: float, lr: float, items: int) -> None:
        self._items += items
        if self._progress is None:
            return
        rate = self._items / max(time.perf_counter() - self._t0, 1e-9)
        stats = f"loss {loss:.3f}  acc {top1:5.1f}%  lr {lr:.2e}  {rate:,.0f} items/s"
        self._progress.update(self._batch_task, completed=step, stats=stats)

    def end_epoch(self, message: str) -> None:
        if self._progress is not None:
            self._progress.advance(self._epoch_task)
            self._progress.update(self._epoch_task, stats=message.split("|")[0].strip())
        self.log(message)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


# --------------------------------------------------------------------------- fit


def _loaders(built: Built, generator: torch.Generator) -> tuple[DataLoader, DataLoader | None]:
    cfg = built.cfg
    common = {
        "batch_size": cfg.batch_size, "collate_fn": collate_samples, "num_workers": cfg.num_workers,
        "pin_memory": built.device.type == "cuda",
        # fresh workers every epoch, seeded from the (checkpointed) loader generator: persistent
        # workers carry their RNG across epochs, which a resumed run cannot restore
        "persistent_workers": False,
    }
    train = DataLoader(built.train_set, shuffle=True, generator=generator, **common)
    val = None
    if built.val_set is not None:
        # its own generator: iterating a loader draws a worker seed, which must not move the training RNG
        val = DataLoader(built.val_set, shuffle=False, generator=torch.Generator().manual_seed(cfg.seed), **common)
    return train, val


def _read_config(path: Path) -> dict:
    """A run's ``config.json``."""
    return read_json_object(path, "pass --overwrite to replace the run, or choose another --output-dir")


def _same_setting(key: str, old, new) -> bool:
    if key in _PATH_KEYS and old and new:
        return os.path.realpath(old) == os.path.realpath(new)
    return old == new


def _run_state(out: Path) -> str | None:
    """What ``out`` holds: None (no run), ``started`` (no checkpoint yet), ``stopped`` or ``finished``."""
    if (out / "summary.json").is_file():
        return "finished"
    if (out / CHECKPOINT_LAST).is_file():
        return "stopped"
    if (out / CHECKPOINT_BEST).is_file() or (out / "metrics.jsonl").is_file():
        return "started"
    return None


def _check_output(cfg: TrainConfig, out: Path) -> None:
    """Refuse a folder holding a run that this call would lose, before anything is built or written.

    A run is continued only with ``resume`` and replaced only with ``overwrite``; without
    either, a folder holding one is an error that says both.
    """
    state = _run_state(out)
    elsewhere = "or choose another --output-dir"
    if cfg.resume:
        if state != "stopped" and state != "finished":
            started = "; the run there stopped before its first epoch ended: pass --overwrite to start it again" \
                if state == "started" else ""
            raise VideoCoopError(f"--resume: no {CHECKPOINT_LAST} in {out} to resume from{started}")
        return
    if state is None or cfg.overwrite:
        return
    replace = "--overwrite to replace it (its checkpoints, metrics and log are deleted)"
    if state == "started":
        raise VideoCoopError(f"{out} holds the start of a run that stopped before its first epoch ended (no "
                             f"{CHECKPOINT_LAST}): pass {replace}, {elsewhere}")
    try:
        epoch = load_checkpoint(out / CHECKPOINT_LAST)["epoch"] if state == "stopped" else None
    except VideoCoopError:
        epoch = None
    try:
        epochs = _read_config(out / "config.json")["epochs"]
    except (VideoCoopError, KeyError):
        epochs = "?"
    if state == "finished":
        raise VideoCoopError(f"{out} holds a finished run ({epochs} epochs; summary.json): nothing to continue. "
                             f"Pass {replace}, {elsewhere}; --eval-only evaluates it")
    after = f"after epoch {epoch} of {epochs}" if epoch is not None else "part-way"
    raise VideoCoopError(f"{out} holds a run stopped {after}: pass --resume to continue it, {replace}, {elsewhere}")


def _start_output(cfg: TrainConfig, out: Path) -> None:
    """Once the run is built and checked: a resumed run must be the same run; an overwritten
    one is deleted now, not before (a bad new config loses nothing)."""
    config_path = out / "config.json"
    if cfg.resume and config_path.is_file():
        old, new = _read_config(config_path), cfg.to_dict()
        keys = sorted(k for k in set(old) | set(new) if k not in _EXECUTION_KEYS)
        diff = [k for k in keys if not _same_setting(k, old.get(k), new.get(k))]
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise VideoCoopError(
                f"{out} holds a run with a different config ({detail}); --resume continues the same run only: "
                f"drop --resume and pass --overwrite to replace it, or choose another --output-dir"
            )
    elif cfg.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _format_epoch(epoch: int, epochs: int, row: Mapping) -> str:
    parts = [f"epoch {epoch}/{epochs}"]
    if row.get("train_loss") is not None:
        parts.append(f"train loss {row['train_loss']:.4f} acc {row['train_top1']:.2f}%")
    if row.get("val_top1") is not None:
        parts.append(f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.2f}% top5 {row['val_top5']:.2f}%")
    parts.append(f"lr {row['lr']:.2e}  {row['seconds']:.1f}s")
    return " | ".join(parts)


def _read_metrics(path: Path) -> list[dict]:
    """The rows of ``metrics.jsonl``, skipping unparsable lines (a kill mid-write tears the last one)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def _evaluate_only(built: Built, out: Path, reporter: Reporter) -> dict:
    model, cfg = built.model, built.cfg
    ckpt_path = next((out / n for n in (CHECKPOINT_BEST, CHECKPOINT_LAST) if (out / n).is_file()), None)
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        if state["classnames"] != built.classnames:
            raise VideoCoopError(f"{ckpt_path} was trained on classes {state['classnames']}, the data has {built.classnames}")
        model.load_trainable_state_dict(state["trainable"])
        what = f"{ckpt_path} (epoch {state['epoch']})"
    else:
        warnings.warn(f"no checkpoint in {out}: evaluating the initial prompts", stacklevel=3)
        what = "the initial prompts (no checkpoint)"
    dataset = built.val_set
    if dataset is None:
        # the training split, with evaluation's frame sampling (segment middles), not
        # training's random offsets: the same numbers on every run
        dataset = copy.copy(built.train_set)
        dataset.train = False
    _, val_loader = _loaders(dataclasses.replace(built, val_set=dataset), torch.Generator())
    result = validate(model, val_loader, built.device, built.classnames, precision=cfg.precision)
    reporter.log(f"eval of {what} on {dataset.root}: loss {result.loss:.4f} top1 {result.top1:.2f}% top5 {result.top5:.2f}%")
    for c, acc in result.per_class.items():
        reporter.log(f"  {c}: {acc:.1f}%")
    summary = {"checkpoint": None if ckpt_path is None else str(ckpt_path), "data": str(dataset.root), **result._asdict()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "eval.json", summary)
    return summary


def fit(cfg: TrainConfig) -> dict:
    """Train as configured; write config, metrics, summary, log and checkpoints to ``output_dir``.

    Evaluates the initial prompts first ("epoch 0"), then trains, evaluating after every
    epoch. With ``resume`` it continues from ``checkpoint_last.pt`` to the numbers an
    uninterrupted run reaches. With ``eval_only`` it evaluates and writes ``eval.json``.

    Returns:
        The summary (as written to ``summary.json``, or ``eval.json`` for ``eval_only``).

    Raises:
        VideoCoopError: anything wrong with the config, data, prompts file or output dir.
        TrainingDiverged: the loss became NaN or inf.
    """
    cfg.check()
    out = Path(cfg.output_dir)
    if cfg.eval_only:
        cfg = _eval_config(cfg, out)
    else:
        cfg = _default_precision(cfg)
        _check_output(cfg, out)  # refuse before building: nothing is deleted or written yet
    t_start = time.perf_counter()
    built = build(cfg)
    cfg = built.cfg  # resolved: what the run really uses
    if not cfg.eval_only:
        _start_output(cfg, out)
    reporter = Reporter(cfg.progress, None if cfg.eval_only else out / "log.txt")
    try:
        model = built.model
        reporter.log(
            f"{len(built.classnames)} classes, {len(built.train_set)} training videos"
            + (f", {len(built.val_set)} validation videos" if built.val_set is not None else "")
            + f"; CLIP {cfg.clip_model} ({weights_id(cfg.pretrained, cfg.clip_checkpoint, cfg.clip_seed)}), "
            f"n_ctx {model.prompt_learner.n_ctx}{' (class-specific)' if model.prompt_learner.csc else ''}, "
            f"device {built.device}, precision {cfg.precision}"
        )
        if cfg.eval_only:
            return _evaluate_only(built, out, reporter)
        write_json(out / "config.json", {k: v for k, v in cfg.to_dict().items() if k not in _ACTION_KEYS})
        return _train(built, out, reporter, t_start)
    finally:
        reporter.close()


def _eval_config(cfg: TrainConfig, out: Path) -> TrainConfig:
    """The config to evaluate a run with: the checkpoint's model shape (n_ctx, csc, prompts
    file, CLIP), frame sampling and precision from its ``config.json``; data and device
    from this call, frames and precision too where given."""
    if not (out / "config.json").is_file():
        return cfg
    stored = TrainConfig.from_dict({k: v for k, v in _read_config(out / "config.json").items() if k not in _ACTION_KEYS})
    given = {k: getattr(cfg, k) for k in ("num_frames", "precision") if getattr(cfg, k) is not None}
    this_call = {k: getattr(cfg, k) for k in ("feature_dir", "val_feature_dir", *_EXECUTION_KEYS)}
    return dataclasses.replace(stored, **this_call, **given)


def _diverged(e: TrainingDiverged, epoch: int, steps: int, cfg: TrainConfig, reporter: Reporter) -> TrainingDiverged:
    """Say where the loss diverged and what is kept; logged, then raised by the caller."""
    kept = (f"{CHECKPOINT_LAST} keeps epoch {epoch - 1}, the last good state" if epoch > 1
            else "no checkpoint was written (the first epoch diverged)")
    hint = f"lower --lr (it is {cfg.lr:g})" + (" or use --precision fp32" if cfg.precision != "fp32" else "")
    message = (f"{e} of epoch {epoch} (step {(epoch - 1) * steps + e.step} of the run); training stopped and "
               f"{kept}: {hint}")
    reporter.log(message)
    return TrainingDiverged(message, e.step, e.loss)


def _train(built: Built, out: Path, reporter: Reporter, t_start: float) -> dict:
    cfg, model, device, classnames = built.cfg, built.model, built.device, built.classnames
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader, val_loader = _loaders(built, generator)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    fp16_amp = cfg.precision == "amp" and _amp_dtype(device) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if fp16_amp else None
    best = {"epoch": 0, "top1": -1.0, "per_class": {}}
    metrics_path = out / "metrics.jsonl"
    first_epoch = 1
    if cfg.resume:
        state = load_checkpoint(out / CHECKPOINT_LAST)
        if state["classnames"] != classnames:
            raise VideoCoopError(f"{out / CHECKPOINT_LAST} was trained on classes {state['classnames']}, the data has {classnames}")
        model.load_trainable_state_dict(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        best = dict(state["best"])
        first_epoch = state["epoch"] + 1
        _set_rng_state(state["rng"], generator)
        # drop lines of epochs after the checkpoint (a kill between the two writes)
        rows = _read_metrics(metrics_path) if metrics_path.is_file() else []
        write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows if r["epoch"] < first_epoch))
        if first_epoch > cfg.epochs:
            reporter.log(f"the run in {out} already finished its {cfg.epochs} epochs: nothing to resume")
        else:
            reporter.log(f"resuming from {out / CHECKPOINT_LAST} after epoch {state['epoch']}")
    else:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

    def record(row: dict) -> None:
        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        reporter.end_epoch(_format_epoch(row["epoch"], cfg.epochs, row))

    if first_epoch == 1 and val_loader is not None:
        t0 = time.perf_counter()
        ev = validate(model, val_loader, device, classnames, precision=cfg.precision)
        record({"epoch": 0, "train_loss": None, "train_top1": None, "val_loss": ev.loss, "val_top1": ev.top1,
                "val_top5": ev.top5, "lr": 0.0, "seconds": time.perf_counter() - t0, "untrained": True})

    reporter.start(cfg.epochs, first_epoch)
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        reporter.begin_epoch(epoch, len(train_loader))
        try:
            tr = train_one_epoch(model, train_loader, optimizer, device, scheduler, precision=cfg.precision,
                                 scaler=scaler, on_batch=reporter.batch if reporter.shows_batches else None,
                                 check_every=cfg.check_every)
        except TrainingDiverged as e:
            raise _diverged(e, epoch, len(train_loader), cfg, reporter) from e
        row = {"epoch": epoch, "train_loss": tr.loss, "train_top1": tr.top1, "val_loss": None, "val_top1": None,
               "val_top5": None, "lr": lr}
        score, per_class = tr.top1, {}
        if val_loader is not None:
            ev = validate(model, val_loader, device, classnames, precision=cfg.precision)
            row.update(val_loss=ev.loss, val_top1=ev.top1, val_top5=ev.top5)
            score, per_class = ev.top1, ev.per_class
        row["seconds"] = time.perf_counter() - t0
        is_best = score > best["top1"]
        if is_best:
            best = {"epoch": epoch, "top1": score, "per_class": per_class}
        state = {
            "trainable": model.trainable_state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": None if scaler is None else scaler.state_dict(),
            "epoch": epoch, "best": best, "rng": _rng_state(generator), "config": cfg.to_dict(),
            "classnames": classnames,
        }
        record(row)
        # best first: a kill between the writes leaves last at the previous epoch, whose best is on disk
        if is_best:
            save_checkpoint(out / CHECKPOINT_BEST, **state)
        save_checkpoint(out / CHECKPOINT_LAST, **state)

    rows = _read_metrics(metrics_path)
    untrained = next((r["val_top1"] for r in rows if r["epoch"] == 0), None)
    final = rows[-1]
    summary = {
        "best_epoch": best["epoch"],
        "best_top1": best["top1"],
        "best_metric": "val_top1" if val_loader is not None else "train_top1",
        "untrained_val_top1": untrained,
        "final_val_top1": final.get("val_top1"),
        "final_val_top5": final.get("val_top5"),
        "final_train_loss": final.get("train_loss"),
        "epochs": cfg.epochs,
        "seconds": time.perf_counter() - t_start,
        "device": str(device),
        "classnames": classnames,
        "per_class": best["per_class"],
    }
    write_json(out / "summary.json", summary)
    if untrained is not None:
        reporter.log(f"untrained prompts (epoch 0): val top1 {untrained:.2f}%; trained (epoch {cfg.epochs}): "
                     f"val top1 {final['val_top1']:.2f}%")
    reporter.log(f"best: epoch {best['epoch']}, {summary['best_metric']} {best['top1']:.2f}%; "
                 f"{summary['seconds']:.0f}s; output in {out}")
    return summary
