"""The training config: one dataclass field per ``videocoop train`` flag, and its resolution
against the machine (the device) and the data (the CLIP that made the features)."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..clip.loader import PRECISIONS
from ..data.layout import INFO_FILE
from ..data.sampling import MAX_FRAMES
from ..model.prompt_learner import POSITIONS
from ..model.text_encoder import POOLS
from ..model.video_clip import TEMPORAL_AGGS
from ..utils.config import config_from_dict
from ..utils.errors import ConfigError, InputError, VideoCoopError
from ..utils.readers import read_json_object
from ..utils.progress import PROGRESS
from ..utils.seeding import MAX_SEED, check_seed

OPTIMIZERS = ("sgd", "adamw")
# DataLoader processes past which the number cannot be meant (each holds a copy of the dataset).
MAX_WORKERS = 256
# Flags that change how a run executes, not what it computes: a resumed or re-run output
# directory may differ in these.
EXECUTION_KEYS = ("resume", "eval_only", "overwrite", "device", "num_workers", "progress", "output_dir", "check_every",
                  "tensorboard", "shard_text", "checkpoint")
# Actions of one invocation, not settings of a run: never read back from a config file.
ACTION_KEYS = ("resume", "eval_only", "overwrite", "checkpoint")
# Paths compared resolved: ./k and /abs/k/ name the same folder.
PATH_KEYS = ("feature_dir", "val_feature_dir", "select_feature_dir", "initial_prompts_file", "base_classes")
#: What ``checkpoint`` takes (videocoop.train.selection): the last epoch's model, or the epoch
#: chosen on select_feature_dir.
CHECKPOINTS = ("last", "best")


@dataclass
class TrainConfig:
    """Everything a training run depends on: one field per ``videocoop train`` flag.

    Defaults follow CoOp (Zhou et al., 2022) where it has one: SGD, lr 0.002, momentum
    0.9, weight decay 5e-4, cosine schedule, one warm-up epoch at a constant 1e-5,
    batch 32, 16 context vectors.
    """

    feature_dir: str | None = None  # training features: <dir>/<class>/<video>.pt|.npy
    val_feature_dir: str | None = None  # held-out features the run is judged on (the test split); nothing is chosen on them
    select_feature_dir: str | None = None  # a validation split of its own to choose the best epoch on (checkpoint_best.pt); None: the last epoch, no choosing
    initial_prompts_file: str | None = None  # JSON prompts file (docs/training.md, "The custom prompts file")
    output_dir: str = "output/videocoop"  # config, metrics, checkpoints, log go here
    epochs: int = 50  # the seed's command; CoOp uses 200 for 16 shots, 50 for 1 shot
    batch_size: int = 32  # CoOp; the global batch: under torchrun each process takes its share
    lr: float = 0.002  # CoOp's SGD learning rate
    optimizer: str = "sgd"  # sgd (CoOp) | adamw (Efficient-Prompt)
    momentum: float = 0.9  # SGD momentum (CoOp)
    weight_decay: float = 5e-4  # CoOp; not on biases, norms or the temporal position embedding
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
    seed: int = 0  # context init, shuffling, frame sampling (and the shot draw unless split_seed is given)
    shots: int | None = None  # few-shot: K training videos per class, drawn by split_seed (OUTPUT_DIR/shots.json); None: every video
    split_seed: int | None = None  # seed of the shot draw; None: seed (CoOp draws with the run's seed; shots.json says which)
    base_classes: str | None = None  # base-to-novel: train on these classes only: half (CoCoOp: the first ceil(n/2)) or a file of names
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    resume: bool = False  # continue from output_dir/checkpoint_last.pt
    eval_only: bool = False  # evaluate output_dir's checkpoint (or the initial prompts) and stop
    checkpoint: str = "last"  # which one eval_only evaluates: last (the model after the last epoch) | best (chosen on select_feature_dir)
    overwrite: bool = False  # replace the run in output_dir (its files deleted once the new run is built and checked)
    progress: str = "auto"  # auto (rich bars on a terminal, plain lines otherwise) | rich | plain | none
    check_every: int = 10  # steps between reads of the on-device NaN/inf flag: one host sync each, so not every step
    shard_text: bool | None = None  # torchrun: each process encodes its share of the classes; None: on with >1 process
    tensorboard: bool = False  # also write TensorBoard event files to output_dir/tensorboard (needs the tensorboard package)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        """Build from a dict, rejecting unknown keys.

        Raises:
            VideoCoopError: unknown keys, naming the closest and the valid ones.
        """
        return config_from_dict(cls, d, what="config")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a run's ``config.json`` (or any JSON object of config keys) as the settings of
        a new run; the actions of the run that wrote it (resume, eval_only, overwrite) are not
        carried over.

        Raises:
            InputError: an unreadable file, unknown keys, or a value of another type than its
                field's, naming the file and the key.
        """
        d = read_json_object(path, "a config file holds a JSON object of `videocoop train` settings")
        return config_from_dict(cls, {k: v for k, v in d.items() if k not in ACTION_KEYS}, what="config", path=path)

    def check(self) -> None:
        """Validate choices and ranges before anything is loaded.

        Raises:
            ConfigError: naming the bad value, its key and the valid options (a VideoCoopError
                where the conflict is between flags: --resume and --eval-only).
        """
        choices = {
            "optimizer": OPTIMIZERS, "precision": PRECISIONS, "class_token_position": POSITIONS,
            "temporal_agg": TEMPORAL_AGGS, "text_pool": POOLS, "progress": PROGRESS, "checkpoint": CHECKPOINTS,
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid and not (key == "precision" and self.precision is None):
                raise ConfigError(key, f"unknown {key} {getattr(self, key)!r}; choose one of {', '.join(valid)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "n_ctx": self.n_ctx,
                    "check_every": self.check_every}
        for key in ("num_frames", "shots"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(key, f"{key} must be >= 1, got {value}")
        for key in ("lr", "warmup_lr", "weight_decay", "momentum", "warmup_epochs", "num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(key, f"{key} must be >= 0, got {getattr(self, key)}")
        for key, most in (("num_frames", MAX_FRAMES), ("num_workers", MAX_WORKERS)):
            if getattr(self, key) is not None and getattr(self, key) > most:
                raise ConfigError(key, f"{key} must be at most {most}, got {getattr(self, key)}")
        for key in ("seed", "split_seed", "clip_seed"):
            if getattr(self, key) is not None:
                check_seed(key, getattr(self, key))
        if not self.feature_dir:
            raise ConfigError("feature_dir", "no training features: pass --feature-dir DIR (a folder of "
                                             "<class>/<video>.pt|.npy)")
        for key in ("feature_dir", "val_feature_dir", "select_feature_dir", "initial_prompts_file", "clip_checkpoint"):
            path = getattr(self, key)
            if (path or (key == "clip_checkpoint" and path is not None)) and not os.path.exists(path):
                raise ConfigError(key, f"{key.replace('_', '-')} {path or repr(path)} does not exist")
        if self.base_classes:
            if self.csc:
                raise ConfigError("csc", "--csc learns a context per class, which cannot carry over to novel "
                                         "classes: --base-classes needs the unified context (drop --csc)")
            if not self.val_feature_dir:
                raise ConfigError("val_feature_dir", "--base-classes reports base and novel accuracy on validation "
                                                     "videos: pass --val-feature-dir DIR holding videos of both")
            if self.base_classes != "half" and not os.path.isfile(self.base_classes):
                raise ConfigError("base_classes", f"--base-classes {self.base_classes!r}: choose half (CoCoOp's split) "
                                                  f"or a file of base class names, one per line; no such file")
        if self.select_feature_dir and self.val_feature_dir and \
                os.path.realpath(self.select_feature_dir) == os.path.realpath(self.val_feature_dir):
            raise ConfigError("select_feature_dir", f"--select-feature-dir {self.select_feature_dir} is the test split "
                                                    f"(--val-feature-dir): an epoch chosen on it reports an optimistic "
                                                    f"number; pass a validation split of its own")
        if self.checkpoint != "last" and not self.eval_only:
            raise ConfigError("checkpoint", f"--checkpoint {self.checkpoint} chooses what --eval-only evaluates: "
                                            f"pass --eval-only too")
        if self.resume and self.eval_only:
            raise VideoCoopError("--resume and --eval-only exclude each other")
        if self.resume and self.overwrite:
            raise VideoCoopError("--resume continues the run in --output-dir, --overwrite replaces it: pass one of them")


def default_precision(cfg: TrainConfig) -> TrainConfig:
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
    if cfg.pretrained or cfg.clip_checkpoint or info is None:
        return out
    weights = info["weights"]
    if weights.startswith("random:"):
        seed = weights.split(":", 1)[1]
        if not (seed.isascii() and seed.isdigit()) or int(seed) > MAX_SEED:
            raise InputError(where, f"found {weights!r}; random weights are written random:<seed>, a seed from 0 to "
                                    f"{MAX_SEED}", at='key "weights"')
        return dataclasses.replace(out, clip_seed=int(seed))
    if weights.startswith("sha256:"):
        raise VideoCoopError(
            f"{where} says the features were made with a CLIP checkpoint file ({weights}); pass it with --clip-checkpoint FILE"
        )
    return dataclasses.replace(out, pretrained=weights)


__all__ = [
    "ACTION_KEYS", "CHECKPOINTS", "EXECUTION_KEYS", "OPTIMIZERS", "PATH_KEYS", "PROGRESS", "TrainConfig",
    "default_precision", "resolve_clip",
]
