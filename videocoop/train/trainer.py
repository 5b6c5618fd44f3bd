"""Training: CoOp's recipe on feature folders, with checkpoints that resume exactly.

:func:`~videocoop.train.builder.build` turns a :class:`~videocoop.train.config.TrainConfig`
into a checked model and datasets; :func:`fit` runs it: the untrained prompts are evaluated
("epoch 0"), then each epoch trains (:func:`~videocoop.train.engine.train_one_epoch`),
evaluates (:func:`~videocoop.train.engine.validate`), logs a line and writes its checkpoints.
The pieces live by concern: builder, config, engine (the loops), optim, checkpoint, rundir
(the output folder's policy), plots. Their public names are importable from here.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..clip.loader import weights_id_of
from ..data.protocols import split_seed_of, write_protocol_files
from ..data.samples import collate_samples
from ..utils.distributed import (
    DEVICES,
    World,
    destroy_process_group,
    device_for,
    init_process_group,
    resolve_device,
    world_from_env,
)
from ..utils.errors import InputError
from ..utils.files import atomic_write, write_json
from ..utils.progress import Bars, file_handler, log_handlers
from .base_to_novel import evaluate_novel
from .builder import TrainSetup, build
from .checkpoint import (CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint, restore_trainable, rng_state,
                         save_checkpoint, set_rng_state)
from .config import ACTION_KEYS, EXECUTION_KEYS, OPTIMIZERS, PROGRESS, TrainConfig, default_precision, resolve_clip
from .ddp import GlobalBatchSampler, ShardSampler, TrainStep, wrap
from .engine import EvalResult, TrainingDiverged, TrainResult, amp_dtype, class_text, train_one_epoch, validate
from .optim import make_optimizer, make_scheduler
from .plots import plot_run
from .record import LAST_EPOCH, run_protocol, selection_line
from .selection import Selection, load_run_checkpoint
from .rundir import Recorder, check_output, resumed_rows, start_output, truncate_metrics

log = logging.getLogger(__name__)
#: Whether a distributed run shards the classes' text encoding over its processes when
#: --shard-text is not given (measured: docs/benchmarks.md, "Several processes").
SHARD_TEXT_DEFAULT = True


def _loaders(setup: TrainSetup) -> tuple[DataLoader, DataLoader | None]:
    """This process's loaders: its share of each global training batch, its share of the
    validation videos. The batches and each video's frames are functions of (seed, epoch):
    call ``set_epoch`` on the batch sampler and the dataset before each epoch."""
    cfg, world = setup.cfg, setup.world
    batches = GlobalBatchSampler(len(setup.train_set), cfg.batch_size, cfg.seed, world)
    train = DataLoader(setup.train_set, batch_sampler=batches, collate_fn=_collate_share, **_loading(setup))
    return train, _eval_loader(setup, setup.val_set)


def _loading(setup: TrainSetup) -> dict:
    """How every loader of a run loads: its workers, pinned memory on CUDA, and fresh workers
    every epoch (persistent workers would keep an old epoch's dataset)."""
    return {"num_workers": setup.cfg.num_workers, "pin_memory": setup.device.type == "cuda", "persistent_workers": False}


def _eval_loader(setup: TrainSetup, dataset) -> DataLoader | None:
    """This process's share of ``dataset``'s videos for an evaluation; None without a dataset."""
    if dataset is None:
        return None
    return DataLoader(dataset, sampler=ShardSampler(len(dataset), setup.world), batch_size=setup.cfg.batch_size,
                      collate_fn=collate_samples, **_loading(setup))


def _collate_share(items):
    """A process's share of a global batch; None when a small last batch leaves it none."""
    return collate_samples(items) if items else None


def fit(cfg: TrainConfig) -> dict:
    """Train as configured; write config, metrics, summary, log, pictures and checkpoints to ``output_dir``.

    Evaluates the initial prompts first ("epoch 0"), then trains, evaluating after every
    epoch. With ``resume`` it continues from ``checkpoint_last.pt`` to the numbers an
    uninterrupted run reaches. With ``eval_only`` it evaluates and writes ``eval.json``.
    Lines go to the ``videocoop.train`` logger (and ``log.txt``); bars to a terminal.
    Under torchrun every process runs this; rank 0 alone writes files.

    Returns:
        The summary (as written to ``summary.json``, or ``eval.json`` for ``eval_only``).

    Raises:
        VideoCoopError: anything wrong with the config, data, prompts file or output dir.
        TrainingDiverged: the loss became NaN or inf.
    """
    cfg.check()
    world = world_from_env()
    out = Path(cfg.output_dir)
    if cfg.eval_only:
        cfg = _eval_config(cfg, out)
    else:
        cfg = default_precision(cfg)
        check_output(cfg, out)  # refuse before building: nothing is deleted or written yet
    t_start = time.perf_counter()
    started = init_process_group(world, device_for(world, resolve_device(cfg.device)))
    try:
        setup = build(cfg, world)
        cfg = setup.cfg  # resolved: what the run really uses
        if cfg.eval_only:
            return _evaluate_only(setup, out)
        if world.is_main:
            start_output(cfg, out)
        world.barrier()  # the folder is ready (an overwritten run gone) before anyone reads it
        with log_handlers(file_handler(out / "log.txt") if world.is_main else None):
            _log_start(setup)
            if world.is_main:
                write_json(out / "config.json", {k: v for k, v in cfg.to_dict().items() if k not in ACTION_KEYS})
                write_protocol_files(cfg, setup.protocol, out, resume=cfg.resume)  # shots.json, classes.json
            return _train(setup, out, t_start)
    finally:
        if started:
            destroy_process_group()


def _log_start(setup: TrainSetup) -> None:
    cfg, pl = setup.cfg, setup.model.prompt_learner
    val = f", {len(setup.val_set)} validation videos" if setup.val_set is not None else ""
    world = f"; {setup.world.size} processes (torchrun), global batch {cfg.batch_size}, text {'sharded' if _shard_text(setup) else 'on every process'}" \
        if setup.world.distributed else ""
    if setup.world.is_main:
        log.info(f"{len(setup.classnames)} classes, {len(setup.train_set)} training videos{val}; "
                 f"CLIP {cfg.clip_model} ({weights_id_of(cfg)}), "
                 f"n_ctx {pl.n_ctx}{' (class-specific)' if pl.csc else ''}, device {setup.device}, "
                 f"precision {cfg.precision}{world}")


def _shard_text(setup: TrainSetup) -> bool:
    """Whether each process encodes only its share of the classes (distributed runs only)."""
    if not setup.world.distributed:
        return False
    if setup.cfg.shard_text is None:
        return SHARD_TEXT_DEFAULT and len(setup.classnames) >= setup.world.size
    return setup.cfg.shard_text


def _eval_config(cfg: TrainConfig, out: Path) -> TrainConfig:
    """The config to evaluate a run with: the checkpoint's model shape (n_ctx, csc, prompts
    file, CLIP), frame sampling and precision from its ``config.json``; data and device
    from this call, frames and precision too where given."""
    if not (out / "config.json").is_file():
        return cfg
    stored = TrainConfig.from_file(out / "config.json")
    given = {k: getattr(cfg, k) for k in ("num_frames", "precision") if getattr(cfg, k) is not None}
    this_call = {k: getattr(cfg, k) for k in ("feature_dir", "val_feature_dir", *EXECUTION_KEYS)}
    # nothing is chosen here (cfg.checkpoint names the checkpoint): the selection split is not read
    return dataclasses.replace(stored, **this_call, **given, select_feature_dir=None)


def _evaluate_only(setup: TrainSetup, out: Path) -> dict:
    model, cfg = setup.model, setup.cfg
    state = ckpt_path = None
    if cfg.checkpoint == "last" and not (out / CHECKPOINT_LAST).is_file():
        log.warning(f"no checkpoint in {out}: evaluating the initial prompts")
        what = "the initial prompts (no checkpoint)"
    else:
        state, ckpt_path, what = load_run_checkpoint(out, cfg.checkpoint)
        restore_trainable(model, state, ckpt_path, classnames=setup.classnames)
    dataset = setup.val_set
    if dataset is None:
        # the training split, with evaluation's frame sampling (segment middles), not
        # training's random offsets: the same numbers on every run
        dataset = copy.copy(setup.train_set)
        dataset.train = False
    _, val_loader = _loaders(dataclasses.replace(setup, val_set=dataset))
    result = validate(model, val_loader, setup.device, setup.classnames, precision=cfg.precision, world=setup.world)
    log.info(f"eval of {what} on {dataset.root}: loss {result.loss:.4f} top1 {result.top1:.2f}% top5 {result.top5:.2f}%")
    for c, acc in result.per_class.items():
        log.info(f"  {c}: {acc:.1f}%")
    chosen = state.get("selection") if state is not None and cfg.checkpoint == "best" else None  # what chose it
    summary = {"checkpoint": None if ckpt_path is None else str(ckpt_path), "model": what,
               "epoch": 0 if state is None else state["epoch"], "selection": chosen, "data": str(dataset.root),
               "loss": result.loss, "top1": result.top1, "top5": result.top5, "per_class": result.per_class}
    summary.update(_protocol_results(setup, result.top1))
    summary["protocol"] = _protocol(setup, what)
    if setup.world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "eval.json", summary)
    return summary


def _protocol_results(setup: TrainSetup, base_top1: float | None) -> dict:
    """What the run's protocol adds to a summary: the shot draw; after base-to-novel training,
    base, novel and HM (the model as it is now: the final epoch, or the checkpoint evaluated)."""
    cfg, split = setup.cfg, setup.protocol
    results = {"shots": cfg.shots, "split_seed": split_seed_of(cfg)} if cfg.shots else {}
    if split is not None and split.base_to_novel:
        _, loader = _loaders(dataclasses.replace(setup, val_set=split.novel_val_set))
        results.update(evaluate_novel(setup.model, setup.novel_model, loader, setup.device, base_top1, cfg.precision,
                                      world=setup.world))
        log.info(f"base-to-novel: base {results['base_top1']:.2f}% ({len(split.classnames)} classes), novel "
                 f"{results['novel_top1']:.2f}% ({len(split.novel)} classes), HM {results['hm']:.2f}%")
    return results


def _protocol(setup: TrainSetup, selection: str = LAST_EPOCH) -> dict:
    """The run's protocol record (:func:`~videocoop.train.record.run_protocol`)."""
    novel = setup.protocol.novel if setup.protocol is not None else ()
    return run_protocol(setup.cfg, setup.model, setup.classnames, selection, novel)


def _divergence_error(e: TrainingDiverged, epoch: int, steps: int, cfg: TrainConfig) -> TrainingDiverged:
    """Say where the loss diverged and what is kept; logged, then raised by the caller."""
    kept = (f"{CHECKPOINT_LAST} keeps epoch {epoch - 1}, the last good state" if epoch > 1
            else "no checkpoint was written (the first epoch diverged)")
    hint = f"lower --lr (it is {cfg.lr:g})" + (" or use --precision fp32" if cfg.precision != "fp32" else "")
    message = (f"{e} of epoch {epoch} (step {(epoch - 1) * steps + e.step} of the run); training stopped and "
               f"{kept}: {hint}")
    log.error(message)
    return TrainingDiverged(message, e.step, e.loss)


@dataclass
class _Stepper:
    """What steps the context and is checkpointed with it: the optimiser, its schedule and,
    for fp16 autocast, the loss scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None

    def state_dicts(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict()}

    def load_state_dicts(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _train(setup: TrainSetup, out: Path, t_start: float) -> dict:
    cfg, model, device, world = setup.cfg, setup.model, setup.device, setup.world
    train_loader, val_loader = _loaders(setup)
    optimizer = make_optimizer(cfg, model)
    fp16_amp = cfg.precision == "amp" and amp_dtype(device) == torch.float16
    stepper = _Stepper(optimizer, make_scheduler(cfg, optimizer, len(train_loader)),
                       torch.amp.GradScaler("cuda") if fp16_amp else None)
    step_model = model
    if world.distributed:  # gradients of the trainable parameters averaged over the processes
        step_model = wrap(TrainStep(model, world, _shard_text(setup)), device)
    selection, first_epoch, rows, per_class = _start(setup, out, stepper)
    select_loader = _eval_loader(setup, setup.select_set)
    recorder = Recorder(cfg, out, world.is_main, first_epoch, rows)
    try:
        if first_epoch == 1 and val_loader is not None:
            t0 = time.perf_counter()
            ev = validate(model, val_loader, device, setup.classnames, precision=cfg.precision, world=world)
            recorder.record({"epoch": 0, "train_loss": None, "train_top1": None, "val_loss": ev.loss,
                             "val_top1": ev.top1, "val_top5": ev.top5, "lr": 0.0, "seconds": time.perf_counter() - t0,
                             "untrained": True})
        recorder.bars.start(cfg.epochs, first_epoch)
        for epoch in range(first_epoch, cfg.epochs + 1):
            row, ev = _epoch(setup, epoch, step_model, train_loader, (val_loader, select_loader), stepper,
                             recorder.bars)
            # chosen on the selection split only, never on the test split; the same on every process
            is_best = selection is not None and selection.update(epoch, row["select_top1"], row["val_top1"])
            per_class = {} if ev is None else ev.per_class
            recorder.record(row)
            if world.is_main:
                _save_epoch(setup, out, epoch, selection, stepper, ev, is_best)
    finally:
        recorder.close()
    return _finish(setup, out, selection, recorder.rows, per_class, t_start)


def _start(setup: TrainSetup, out: Path, stepper: _Stepper) -> tuple[Selection | None, int, list[dict], dict]:
    """The epoch chosen so far on the selection split (None without one), the first epoch to
    train, the metrics rows and the last epoch's per-class top-1 so far: a fresh start (the
    global RNGs seeded), or where ``checkpoint_last.pt`` left off (every process resumes from
    the same checkpoint; one of an older videocoop holds no selection)."""
    cfg, world = setup.cfg, setup.world
    fresh = Selection(cfg.select_feature_dir) if cfg.select_feature_dir else None
    if not cfg.resume:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        return fresh, 1, [], {}
    path = out / CHECKPOINT_LAST
    state = load_checkpoint(path)
    restore_trainable(setup.model, state, path, classnames=setup.classnames)
    try:
        stepper.load_state_dicts(state)
        set_rng_state(state["rng"])
        selection = Selection(**state["selection"]) if state.get("selection") else fresh
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:  # torch's loaders raise these
        raise InputError(path, f"its optimiser, schedule or RNG state cannot be restored ({type(e).__name__}: "
                               f"{str(e)[:160]})", fix="the file is damaged or of another videocoop; pass --overwrite "
                                                       "to train anew, or choose another --output-dir") from e
    first_epoch = state["epoch"] + 1
    rows = resumed_rows(out, first_epoch)
    if world.is_main:
        truncate_metrics(out, first_epoch)
        _log_resume(out, state, first_epoch, cfg.epochs, world)
    return selection, first_epoch, rows, state.get("per_class", {})


def _epoch(setup: TrainSetup, epoch: int, step_model: nn.Module, train_loader: DataLoader,
           eval_loaders: tuple[DataLoader | None, DataLoader | None], stepper: _Stepper,
           bars: Bars) -> tuple[dict, EvalResult | None]:
    """Train one epoch, then evaluate on the test split (``val_*``) and the selection split
    (``select_*``) where there are; its metrics row and the test split's result."""
    cfg, device, world = setup.cfg, setup.device, setup.world
    t0 = time.perf_counter()
    lr = stepper.optimizer.param_groups[0]["lr"]
    train_loader.batch_sampler.set_epoch(epoch)  # this epoch's order of the videos
    setup.train_set.set_epoch(epoch)  # and their frames
    bars.begin_epoch(epoch, len(train_loader))
    try:
        tr = train_one_epoch(step_model, train_loader, stepper.optimizer, device, stepper.scheduler,
                             precision=cfg.precision, scaler=stepper.scaler,
                             on_batch=bars.batch if bars.shows_batches else None, check_every=cfg.check_every,
                             world=world)
    except TrainingDiverged as e:
        raise _divergence_error(e, epoch, len(train_loader), cfg) from e
    row = {"epoch": epoch, "train_loss": tr.loss, "train_top1": tr.top1, "val_loss": None, "val_top1": None,
           "val_top5": None, "lr": lr}
    # one model, up to two splits: its class text features encoded once for both
    text = class_text(setup.model, device, cfg.precision) if any(x is not None for x in eval_loaders) else None
    results = [None if loader is None else validate(setup.model, loader, device, setup.classnames,
                                                    precision=cfg.precision, world=world, text=text)
               for loader in eval_loaders]
    for prefix, result in zip(("val", "select"), results):
        if result is not None:
            row.update({f"{prefix}_loss": result.loss, f"{prefix}_top1": result.top1, f"{prefix}_top5": result.top5})
    row["seconds"] = time.perf_counter() - t0
    return row, results[0]


def _save_epoch(setup: TrainSetup, out: Path, epoch: int, selection: Selection | None, stepper: _Stepper,
                ev: EvalResult | None, is_best: bool) -> None:
    """Rank 0's files after an epoch: the test split's confusion matrix (the model the summary
    reports is the last epoch's), ``checkpoint_best.pt`` when the selection split chose this
    epoch, ``checkpoint_last.pt`` always."""
    state = {
        "trainable": setup.model.trainable_state_dict(), **stepper.state_dicts(), "epoch": epoch,
        "selection": None if selection is None else selection.to_dict(), "per_class": {} if ev is None else ev.per_class,
        "rng": rng_state(), "config": setup.cfg.to_dict(), "classnames": setup.classnames,
        "world_size": setup.world.size,
    }
    if ev is not None and ev.confusion is not None:
        atomic_write(out / "confusion.npy", lambda fh: np.save(fh, ev.confusion.numpy()))
    # best first: a kill between the writes leaves last at the previous epoch, whose choice is on disk
    if is_best:
        save_checkpoint(out / CHECKPOINT_BEST, **state)
    save_checkpoint(out / CHECKPOINT_LAST, **state)


def _finish(setup: TrainSetup, out: Path, selection: Selection | None, rows: list[dict], per_class: dict,
            t_start: float) -> dict:
    """The run's summary, with its protocol's numbers; on rank 0 written (``summary.json``),
    pictured (``curves.png``, ``confusion.png``) and logged. Its numbers are the last epoch's
    model (``checkpoint_last.pt``), as CoOp reports; an epoch chosen on the selection split is
    described beside them (``selection``), never in their place."""
    cfg = setup.cfg
    untrained = next((r["val_top1"] for r in rows if r["epoch"] == 0), None)
    final = rows[-1]
    summary = {
        "model": {"checkpoint": CHECKPOINT_LAST, "epoch": final["epoch"], "chosen": "the last epoch"},
        "untrained_val_top1": untrained,
        "final_val_top1": final.get("val_top1"),
        "final_val_top5": final.get("val_top5"),
        "final_train_loss": final.get("train_loss"),
        "final_train_top1": final.get("train_top1"),
        "per_class": per_class,  # the last epoch's, on the test split
        "selection": None if selection is None or not selection.epoch else selection.summary(),
        "epochs": cfg.epochs,
        "seconds": time.perf_counter() - t_start,
        "device": str(setup.device),
        "processes": setup.world.size,
        "classnames": setup.classnames,
    }
    summary.update(_protocol_results(setup, final.get("val_top1")))
    summary["protocol"] = _protocol(setup, selection_line(summary["selection"]))
    if not setup.world.is_main:
        return summary
    write_json(out / "summary.json", summary)
    plot_run(out)
    if untrained is not None:
        log.info(f"untrained prompts (epoch 0): val top1 {untrained:.2f}%; trained (epoch {final['epoch']}, the last, "
                 f"{CHECKPOINT_LAST}): val top1 {final['val_top1']:.2f}%")
    if summary["selection"]:
        chosen = summary["selection"]
        val = "" if chosen["val_top1"] is None else f", val top1 {chosen['val_top1']:.2f}%"
        log.info(f"chosen on {chosen['split']}: epoch {chosen['epoch']} (select top1 {chosen['select_top1']:.2f}%{val}), "
                 f"{CHECKPOINT_BEST}: --eval-only and predict load it with --checkpoint best")
    log.info(f"{summary['seconds']:.0f}s; output in {out} (curves.png, confusion.png)")
    return summary


def _log_resume(out: Path, state: dict, first_epoch: int, epochs: int, world: World) -> None:
    if first_epoch > epochs:
        log.info(f"the run in {out} already finished its {epochs} epochs: nothing to resume")
        return
    log.info(f"resuming from {out / CHECKPOINT_LAST} after epoch {state['epoch']}")
    before = state.get("world_size", 1)
    if before != world.size:
        # the global batches and every video's frames are functions of (seed, epoch), not of
        # the number of processes: the run goes on exactly where it stopped
        log.info(f"the run had {before} process(es), now {world.size}: the same global batches follow")


__all__ = [
    "CHECKPOINT_BEST", "CHECKPOINT_LAST", "DEVICES", "OPTIMIZERS", "PROGRESS", "TrainSetup", "EvalResult", "TrainConfig",
    "TrainResult", "TrainingDiverged", "build", "fit", "load_checkpoint", "make_optimizer", "make_scheduler",
    "resolve_clip", "resolve_device", "save_checkpoint", "train_one_epoch", "validate",
]
