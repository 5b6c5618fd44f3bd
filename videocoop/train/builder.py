"""What a config builds: its CLIP, the :class:`VideoFeatureCLIP` a run trains, and for
training the checked datasets around them.

:func:`build_model` is the one model builder: training (:func:`build`), its base-to-novel
evaluation (:func:`build_novel_model`) and ``videocoop predict`` all build through it, so a
run's saved ``config.json`` (what training resolved: the CLIP and its weights, n_ctx, csc,
the precision) and its checkpoint's classes rebuild exactly the model training built, and
the checkpoint's strict load fits it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..clip.loader import embed_dim, load_clip_of, weights_id_of
from ..data.features import FeatureDataset, check_feature_info, read_feature_info
from ..data.layout import INFO_FILE
from ..data.packed import open_feature_dataset
from ..data.protocols import ProtocolSplit, apply_protocols
from ..model.prompts_file import PromptsFile
from ..model.video_clip import VideoFeatureCLIP
from ..utils.distributed import World, device_for, resolve_device, world_from_env
from ..utils.errors import VideoCoopError
from .base_to_novel import check_transferable
from .config import TrainConfig, default_precision, resolve_clip


def clip_precision(cfg: TrainConfig) -> str:
    """The precision CLIP's weights load in: fp32 for ``amp`` (autocast lowers the step) and
    for a precision not given."""
    precision = cfg.precision or "fp32"
    return "fp32" if precision == "amp" else precision


def load_run_clip(cfg: TrainConfig) -> tuple[nn.Module, object]:
    """The frozen CLIP (on the CPU) and tokenizer a run's model is built on: the one ``cfg``
    names, in :func:`clip_precision`."""
    return load_clip_of(cfg, precision=clip_precision(cfg))


def load_prompts(cfg: TrainConfig) -> PromptsFile | None:
    """The config's prompts file (``initial_prompts_file``), validated; None without one."""
    return PromptsFile.load(cfg.initial_prompts_file) if cfg.initial_prompts_file else None


def build_model(cfg: TrainConfig, classnames: Sequence[str], clip_model: nn.Module, tokenizer, *,
                prompts: PromptsFile | None = None, run_classes: Sequence[str] | None = None) -> VideoFeatureCLIP:
    """The :class:`VideoFeatureCLIP` a run trains, over ``classnames``, on the CPU.

    Seeds torch's global RNG with ``cfg.seed`` first, as training always has: the random
    context (and a temporal head's initial weights) are a function of the run's seed.

    Args:
        cfg: a :class:`~videocoop.train.config.TrainConfig` whose CLIP is resolved (as
            ``build`` resolves it, and as a run's ``config.json`` holds it): ``n_ctx``,
            ``csc``, ``class_token_position``, ``temporal_agg``, ``text_pool``, ``seed``.
        classnames: the model's classes (the base classes under base-to-novel).
        clip_model, tokenizer: from :func:`load_run_clip`.
        prompts: the run's prompts file (:func:`load_prompts`): its phrase sets n_ctx, its
            per-class phrases imply csc, its display names word the classes.
        run_classes: every class of the run's data, which the prompts file may name (the
            base and novel classes under base-to-novel); default ``classnames``. A class
            among them that the model leaves out needs context that carries over to it.

    Raises:
        VideoCoopError: a prompts file naming classes the run does not have; class-specific
            context with classes held out (base-to-novel); anything PromptLearner refuses.
    """
    classnames = list(classnames)
    run_classes = classnames if run_classes is None else list(run_classes)
    prompt_kwargs = prompts.prompt_kwargs(run_classes) if prompts else {}
    display_names = prompt_kwargs.get("display_names")
    if display_names:  # the prompts file may word the held-out classes too
        prompt_kwargs["display_names"] = {c: w for c, w in display_names.items() if c in classnames} or None
    csc = cfg.csc or (prompts is not None and prompts.csc)
    if set(run_classes) - set(classnames):
        check_transferable(csc)
    torch.manual_seed(cfg.seed)  # random context init
    return VideoFeatureCLIP(
        classnames, clip_model, tokenizer, n_ctx=cfg.n_ctx, csc=csc, class_token_position=cfg.class_token_position,
        temporal_agg=cfg.temporal_agg, text_pool=cfg.text_pool, **prompt_kwargs,
    )


def build_novel_model(cfg: TrainConfig, model: VideoFeatureCLIP, novel: Sequence[str], clip_model: nn.Module,
                      tokenizer, *, prompts: PromptsFile | None = None,
                      run_classes: Sequence[str] | None = None) -> VideoFeatureCLIP:
    """Base-to-novel: :func:`build_model` over the ``novel`` classes, frozen, on ``model``'s device.

    Its context is replaced by ``model``'s trained one before any use
    (:func:`~videocoop.train.base_to_novel.transfer`). Building it leaves torch's CPU RNG
    where it was, so the training run is the same with or without it (the CUDA generators
    are seeded again with ``cfg.seed``, which :func:`build_model` set for ``model`` and
    nothing on the GPU has drawn from since).

    Raises:
        VideoCoopError: class-specific context (it has no vectors for an unseen class).
    """
    with torch.random.fork_rng(devices=[]):  # the random context is drawn on the CPU
        novel_model = build_model(cfg, novel, clip_model, tokenizer, prompts=prompts, run_classes=run_classes)
    novel_model.requires_grad_(False)  # nothing here is ever trained; the trained values are copied in
    return novel_model.to(model.prompt_learner.ctx.device)


@dataclass
class TrainSetup:
    """What :func:`build` made from a config: everything a run needs, checked."""

    cfg: TrainConfig  # resolved: the CLIP named, its weights fixed
    device: torch.device
    clip_model: nn.Module
    tokenizer: object
    model: VideoFeatureCLIP
    train_set: FeatureDataset
    val_set: FeatureDataset | None
    classnames: list[str] = field(default_factory=list)  # the classes trained on (the base classes under base-to-novel)
    world: World = World()  # this process among those of a torchrun run
    protocol: ProtocolSplit | None = None  # few-shot draw and base/novel split (videocoop.data.protocols)
    novel_model: VideoFeatureCLIP | None = None  # base-to-novel: the novel classes' model, never trained
    select_set: FeatureDataset | None = None  # the split an epoch is chosen on (select_feature_dir), never the test split


def build(cfg: TrainConfig, world: World | None = None) -> TrainSetup:
    """Load CLIP, check and load every feature file, build the model on its device.

    Everything that can be wrong with the inputs is found here, before a single step.

    Raises:
        VideoCoopError: bad config, missing CLIP identity, a features.json that names
            another CLIP, any bad feature file, a prompts file naming unknown classes.
    """
    cfg = default_precision(cfg)
    cfg.check()
    world = world_from_env() if world is None else world
    device = device_for(world, resolve_device(cfg.device))
    train_info = read_feature_info(cfg.feature_dir)
    cfg = resolve_clip(cfg, train_info)
    prompts = load_prompts(cfg)
    clip_model, tokenizer = load_run_clip(cfg)
    dim = embed_dim(clip_model)
    weights = weights_id_of(cfg)
    for root in (cfg.feature_dir, cfg.val_feature_dir, cfg.select_feature_dir):
        info = read_feature_info(root) if root else None
        if info is not None:
            check_feature_info(info, cfg.clip_model, weights, dim, where=str(Path(root) / INFO_FILE))
    # per-file folders or packed splits (`videocoop pack`), whichever the folder holds
    train_set = open_feature_dataset(cfg.feature_dir, num_frames=cfg.num_frames, train=True, dim=dim, seed=cfg.seed)
    val_set, select_set = (  # labelled with training's class order
        open_feature_dataset(root, classnames=train_set.classnames, num_frames=cfg.num_frames, dim=dim) if root else None
        for root in (cfg.val_feature_dir, cfg.select_feature_dir))
    if val_set is not None and select_set is not None:
        _refuse_shared_videos(select_set, val_set)
    split = apply_protocols(cfg, train_set, val_set, select_set)  # few-shot draw, base classes: what training may see
    classnames = split.classnames
    model = build_model(cfg, classnames, clip_model, tokenizer, prompts=prompts,
                        run_classes=split.all_classnames).to(device)
    novel_model = None
    if split.novel:
        novel_model = build_novel_model(cfg, model, split.novel, clip_model, tokenizer, prompts=prompts,
                                        run_classes=split.all_classnames)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    # what the run really uses: a prompts file sets n_ctx (its phrase's tokens) and may imply csc
    cfg = dataclasses.replace(cfg, n_ctx=model.prompt_learner.n_ctx, csc=bool(model.prompt_learner.csc), device=str(device))
    return TrainSetup(cfg, device, clip_model, tokenizer, model, split.train_set, split.val_set, list(classnames),
                      world=world, protocol=split, novel_model=novel_model, select_set=split.select_set)


def _refuse_shared_videos(select_set: FeatureDataset, val_set: FeatureDataset) -> None:
    """An epoch chosen on videos of the test split is chosen on the test split. A video counts
    as shared when its evaluation frames are the same bytes in both (the same file, a copy, or
    its packed rows; the same video stored in another dtype is not caught).

    Raises:
        VideoCoopError: a video in both, both places named.
    """
    def fingerprints(dataset) -> dict[str, str]:  # sha1 of a video's frames -> where it is
        return {hashlib.sha1(dataset[i].features.numpy().tobytes()).hexdigest(): str(dataset.files[i][0])
                for i in range(len(dataset))}

    test = fingerprints(val_set)
    shared = [(path, test[key]) for key, path in fingerprints(select_set).items() if key in test]
    if shared:
        raise VideoCoopError(f"--select-feature-dir {select_set.root} shares {len(shared)} video(s) with the test split "
                             f"--val-feature-dir {val_set.root} (e.g. {shared[0][0]} = {shared[0][1]}): choose epochs "
                             f"on videos of their own")


__all__ = [
    "TrainSetup", "build", "build_model", "build_novel_model", "clip_precision", "load_prompts", "load_run_clip",
]
