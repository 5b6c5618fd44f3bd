"""A trained run applied to new videos or feature files: top-k classes per video.

``predict(run_dir, videos=SRC)`` extracts the videos on the fly with the run's CLIP and
the sampling its training features were made with (their ``features.json``);
``predict(run_dir, features=DIR)`` reads a feature folder (class folders, a flat folder,
or a packed split). Labels are not needed; where a video sits in a folder named after one
of the run's classes, the rows say so and the accuracy on those is reported.
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.features import check_feature_info, load_feature_file, read_feature_info
from ..data.layout import FEATURE_SUFFIXES, INFO_FILE
from ..data.samples import VideoSample, collate_samples
from ..data.sampling import frame_indices
from ..utils.errors import InputError, VideoCoopError
from ..utils.files import write_text
from ..utils.progress import Progress
from ..utils.readers import read_json_object
from ..video.decode import Sampling
from ..video.extractor import Extracted, Extractor, Failed, default_workers
from ..video.preprocess import Preprocess
from ..video.sources import chunked, find_videos

OUTPUT_FORMATS = (".csv", ".json")
#: Videos scored per forward of the trained model.
BATCH_VIDEOS = 64


@dataclass
class Prediction:
    """One video's top classes."""

    video: str  # its path relative to the input folder
    label: str | None  # its class folder, when that is one of the run's classes
    top: list[tuple[str, float]]  # (class, probability), best first


@dataclass
class Predictions:
    rows: list[Prediction] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # videos that could not be decoded
    classnames: list[str] = field(default_factory=list)
    checkpoint: str = ""
    model: str = ""  # which model: the checkpoint, its epoch and what chose it (the last epoch, or the selection split)

    def accuracy(self) -> tuple[float, int] | None:
        """Top-1 percent on the rows with a known label, and how many; None without labels."""
        known = [r for r in self.rows if r.label is not None]
        if not known:
            return None
        return 100.0 * sum(r.top[0][0] == r.label for r in known) / len(known), len(known)

    def line(self) -> str:
        acc = self.accuracy()
        tail = f"; top-1 {acc[0]:.1f}% on the {acc[1]} in a folder named after their class" if acc else ""
        failed = f"; {len(self.failures)} could not be decoded" if self.failures else ""
        return f"predict: {len(self.rows)} videos with {self.model or self.checkpoint}{tail}{failed}"


def load_run(run_dir: str | os.PathLike, checkpoint: str = "last"):
    """A run's config and the checkpoint ``checkpoint`` names: ``last`` (the model after the
    last epoch, the default) or ``best`` (the epoch chosen on the run's selection split).

    Returns:
        ``(TrainConfig, checkpoint state, checkpoint path, a line saying which model it is
        and what chose it)``.

    Raises:
        VideoCoopError: no config.json or no such checkpoint in ``run_dir``
            (:func:`~videocoop.train.selection.load_run_checkpoint`).
    """
    from ..train.config import TrainConfig
    from ..train.selection import load_run_checkpoint

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise VideoCoopError(f"{run} holds no training run (no config.json); pass the --output-dir of a `videocoop train`")
    cfg = TrainConfig.from_file(run / "config.json")
    if cfg.clip_model is None:  # training writes the CLIP it resolved: a config without one is not a run's
        raise InputError(run / "config.json", 'no key "clip_model"; a run\'s config names the CLIP it trained on',
                         fix="videocoop train writes it; restore it from the run")
    return cfg, *load_run_checkpoint(run, checkpoint)


def run_classes(run_dir: str | os.PathLike, classnames: list[str]) -> list[str]:
    """Every class of a run's data: its base and novel classes after base-to-novel training
    (``classes.json``), else the classes it trained on.

    Raises:
        VideoCoopError: a ``classes.json`` that does not list its classes.
    """
    from ..data.protocols import CLASSES_FILE

    path = Path(run_dir) / CLASSES_FILE
    if not path.is_file():
        return list(classnames)
    record = read_json_object(path, "it is written by videocoop train --base-classes")
    lists = [record.get(key) for key in ("base", "novel")]
    if not all(isinstance(x, list) and all(isinstance(c, str) for c in x) for x in lists):
        raise VideoCoopError(f"{path} must hold the lists of class names 'base' and 'novel', as videocoop train "
                             f"--base-classes writes them")
    return lists[0] + lists[1]


def build_run_model(cfg, state: dict, device: torch.device, classes: list[str] | None = None,
                    path: str | os.PathLike | None = None):
    """The run's model with its learned tensors, and its CLIP, on ``device``.

    Built by the builder training used (:func:`videocoop.train.builder.build_model`) from the
    run's resolved config; the strict load of the checkpoint refuses any difference (named, with
    the checkpoint's ``path``: :func:`~videocoop.train.checkpoint.check_checkpoint`).
    ``classes``: every class of the run's data (:func:`run_classes`), which its prompts file
    may name; default the checkpoint's.
    """
    from ..train.builder import build_model, load_prompts, load_run_clip
    from ..train.checkpoint import restore_trainable

    if cfg.initial_prompts_file and not Path(cfg.initial_prompts_file).is_file():
        raise VideoCoopError(f"the run's prompts file {cfg.initial_prompts_file} is gone; the model's layout needs it "
                             f"(run predict from the folder training ran in)")
    prompts = load_prompts(cfg)
    clip_model, tokenizer = load_run_clip(cfg)
    model = build_model(cfg, state["classnames"], clip_model, tokenizer, prompts=prompts, run_classes=classes)
    if path is not None:
        restore_trainable(model, state, path)
    else:
        model.load_trainable_state_dict(state["trainable"])
    clip_model.to(device)
    return model.to(device).eval(), clip_model


def _run_sampling(cfg, num_frames: int | None, fps: float | None) -> Sampling:
    """Given flags, else the sampling the training features were made with, else the run's num_frames."""
    if num_frames is not None or fps is not None:
        return Sampling(num_frames=num_frames if fps is None else None, fps=fps)
    info = read_feature_info(cfg.feature_dir) if cfg.feature_dir and Path(cfg.feature_dir).is_dir() else None
    if info is not None and isinstance(info.get("sampling"), dict):
        try:
            return Sampling.from_dict(info["sampling"])
        except VideoCoopError as e:
            raise InputError(Path(cfg.feature_dir) / INFO_FILE, str(e), at='key "sampling"') from e
    if cfg.num_frames is not None:
        return Sampling(num_frames=cfg.num_frames)
    raise VideoCoopError(f"cannot tell how the run's training features were sampled ({cfg.feature_dir}/{INFO_FILE} "
                         f"is missing or not from videocoop extract); pass --num-frames N or --fps F")


def _feature_files(root: Path) -> list[tuple[Path, str | None]]:
    """Every feature file under ``root``, with its parent folder's name (None at the top)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix in FEATURE_SUFFIXES and not name.startswith("."):
                here = Path(folder)
                found.append((here / name, None if here == root else here.name))
    return found


def _read_features(root: Path, cfg, dim: int) -> list[tuple[str, str | None, torch.Tensor]]:
    """``[(video, folder label, features [T, D])]`` of a feature folder or packed split."""
    from ..clip.loader import weights_id_of
    from ..data.packed import PackedFeatureDataset, is_packed

    info = read_feature_info(root)
    if info is not None:
        check_feature_info(info, cfg.clip_model, weights_id_of(cfg), dim, where=str(root / INFO_FILE))
    if is_packed(root):
        ds = PackedFeatureDataset(root, dim=dim)
        return [(x.meta["video_id"], ds.classnames[x.label], x.features) for x in (ds[i] for i in range(len(ds)))]
    files = _feature_files(root)
    if not files:
        raise VideoCoopError(f"no feature files ({'|'.join(FEATURE_SUFFIXES)}) under {root}")
    return [(p.relative_to(root).as_posix(), label, load_feature_file(p, dim)) for p, label in files]


def _score(model, items: Sequence[tuple[str, str | None, torch.Tensor]], num_frames: int | None, top_k: int,
           device: torch.device) -> list[Prediction]:
    """Top-k of the run's model for each ``(video, label, features [T, D])``; the run's
    evaluation frame sampling (segment middles) when it trained on ``num_frames``."""
    names = model.classnames
    k = min(top_k, len(names))
    rows = []
    with torch.no_grad():
        text = model.encode_text()  # [n_cls, E], once
        for start in range(0, len(items), BATCH_VIDEOS):
            part = items[start:start + BATCH_VIDEOS]
            samples = []
            for video, _, x in part:
                if num_frames is not None:
                    x = x[frame_indices(x.shape[0], num_frames)]  # [num_frames, D]
                samples.append(VideoSample(x, 0, {"video_id": video}))
            batch = collate_samples(samples)
            mask = batch.meta.get("mask")
            logits = model.logits(model.encode_video(batch.features.to(device), None if mask is None else mask.to(device)),
                                  text).float()  # [B, n_cls]
            probs = logits.softmax(-1).cpu()
            top = probs.topk(k, dim=-1)
            for (video, label, _), p, i in zip(part, top.values.tolist(), top.indices.tolist()):
                rows.append(Prediction(video, label if label in names else None,
                                       [(names[c], float(q)) for c, q in zip(i, p)]))
    return rows


def predict(run_dir: str | os.PathLike, *, videos: str | os.PathLike | None = None,
            features: str | os.PathLike | None = None, top_k: int = 5, device: str = "auto",
            num_frames: int | None = None, fps: float | None = None, batch_size: int = 128,
            num_workers: int | None = None, progress: str = "auto", checkpoint: str = "last") -> Predictions:
    """Apply a trained run to ``videos`` (a folder of video files, any layout) or to
    ``features`` (a feature folder or packed split); exactly one.

    Args:
        run_dir: a ``videocoop train`` output folder.
        videos, features: the input.
        top_k: classes per video (at most the run's number of classes).
        device: where the CLIP and the model run.
        num_frames, fps: sampling for ``videos``; default the one the run's training
            features were made with (their features.json).
        batch_size, num_workers, progress: as for ``videocoop extract``.
        checkpoint: ``last`` (the model after the last epoch) or ``best`` (the epoch chosen
            on the run's ``--select-feature-dir``).

    Raises:
        VideoCoopError: no run or checkpoint, both or neither input, features from
            another CLIP than the run's, no videos or feature files.
    """
    from ..utils.distributed import resolve_device

    if (videos is None) == (features is None):
        raise VideoCoopError("predict needs exactly one input: --videos SRC or --features DIR")
    if top_k < 1:
        raise VideoCoopError(f"top_k must be >= 1, got {top_k}")
    cfg, state, ckpt, described = load_run(run_dir, checkpoint)
    dev = resolve_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random CLIP weights: the run already said so when it trained
        model, clip_model = build_run_model(cfg, state, dev, run_classes(run_dir, state["classnames"]), path=ckpt)
    out = Predictions(classnames=list(model.classnames), checkpoint=str(ckpt), model=described)
    if features is not None:
        root = Path(features)
        if not root.is_dir():
            raise VideoCoopError(f"--features {root} is not a folder")
        items = _read_features(root, cfg, model.embed_dim)
    else:
        root = Path(videos)
        if not root.is_dir():
            raise VideoCoopError(f"--videos {root} is not a folder")
        _, entries = find_videos(root, labelled=False)
        info = read_feature_info(cfg.feature_dir) if cfg.feature_dir and Path(cfg.feature_dir).is_dir() else None
        precision = (info or {}).get("precision") or ("fp16" if dev.type == "cuda" else "fp32")
        if dev.type != "cuda" and precision == "fp16":
            precision = "fp32"  # fp16 is a GPU format; on the CPU fp32 is the closer of the two
        from ..clip.loader import load_clip_of, weights_id_of
        from ..train.builder import clip_precision

        if precision != clip_precision(cfg):  # the features were made in another precision than the run's text tower
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clip_model, _ = load_clip_of(cfg, device=dev, precision=precision)
        extractor = Extractor(clip_model, cfg.clip_model, weights_id_of(cfg),
                              _run_sampling(cfg, num_frames, fps), Preprocess.from_model(clip_model), dev,
                              precision, batch_size,
                              default_workers() if num_workers is None else num_workers)
        chunks = chunked(entries, extractor.videos_per_chunk())
        bar = Progress(progress, len(entries), "predict", chunks=chunks)
        items = []
        try:
            for result in extractor.run(chunks):
                if isinstance(result, Failed):
                    out.failures.append({"source": result.entry.rel, "error": result.error})
                    bar.advance(0)
                    continue
                assert isinstance(result, Extracted)
                items.append((result.entry.rel, result.entry.label, result.features))
                bar.advance(result.features.shape[0])
        finally:
            bar.close()
    out.rows = _score(model, items, cfg.num_frames, top_k, dev)
    return out


def to_csv(preds: Predictions) -> str:
    k = max((len(r.top) for r in preds.rows), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "label"] + [c for j in range(1, k + 1) for c in (f"class_{j}", f"prob_{j}")])
    for r in preds.rows:
        writer.writerow([r.video, r.label or ""] + [v for c, p in r.top for v in (c, f"{p:.6f}")])
    return buffer.getvalue()


def to_json(preds: Predictions) -> str:
    rows = [{"video": r.video, "label": r.label, "top": [{"class": c, "prob": round(p, 6)} for c, p in r.top]}
            for r in preds.rows]
    acc = preds.accuracy()
    return json.dumps({"checkpoint": preds.checkpoint, "model": preds.model, "classnames": preds.classnames,
                       "predictions": rows,
                       "failures": preds.failures, "top1_on_labelled": None if acc is None else acc[0]}, indent=2) + "\n"


def write_predictions(preds: Predictions, path: str | os.PathLike) -> Path:
    """Write ``.csv`` (one row per video) or ``.json`` atomically, by the suffix."""
    path = Path(path)
    if path.suffix not in OUTPUT_FORMATS:
        raise VideoCoopError(f"cannot write predictions to {path}: the suffix must be one of {', '.join(OUTPUT_FORMATS)}")
    write_text(path, to_csv(preds) if path.suffix == ".csv" else to_json(preds), make_dirs=True)
    return path
