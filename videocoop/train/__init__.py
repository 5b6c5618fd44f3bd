"""Training: the config, the loops, the optimiser, checkpoints, the run folder, DDP,
base-to-novel evaluation at the end of a run, the run's pictures, and ``build``/``fit``.

- :mod:`.builder`: the one model builder (``build_model``, shared with ``videocoop predict``)
  and ``build`` (a config's data, CLIP and model, checked: a ``TrainSetup``).
- :mod:`.config`: ``TrainConfig`` (one field per ``videocoop train`` flag).
- :mod:`.engine`: ``train_one_epoch`` and ``validate`` (the seed's names), mixed precision.
- :mod:`.optim`: the optimiser and the schedule.
- :mod:`.checkpoint`: checkpoints and RNG states; the checkpoint reader (``load_checkpoint``,
  ``check_checkpoint``) and ``diff_state``, which compares any state dict with a model's.
- :mod:`.selection`: which epoch's model a run reports and loads (the last; the best only on
  a selection split that is not the test split).
- :mod:`.rundir`: what an output folder may hold and how a run continues in it.
- :mod:`.ddp`: several processes under torchrun.
- :mod:`.base_to_novel`: the novel classes' evaluation with the learned context.
- :mod:`.plots`: ``curves.png`` and ``confusion.png``.
- :mod:`.trainer`: ``fit`` (the run: epochs, evaluation, checkpoints, the summary).
"""
from ..utils.distributed import DEVICES, resolve_device
from .builder import TrainSetup, build, build_model, load_prompts
from .checkpoint import (CHECKPOINT_BEST, CHECKPOINT_LAST, StateDiff, check_checkpoint, diff_state, load_checkpoint,
                         save_checkpoint)
from .config import CHECKPOINTS, OPTIMIZERS, PROGRESS, TrainConfig, resolve_clip
from .ddp import TrainStep
from .engine import EvalResult, TrainingDiverged, TrainResult, train_one_epoch, validate
from .optim import make_optimizer, make_scheduler
from .selection import Selection, load_run_checkpoint
from .trainer import fit

__all__ = [
    "CHECKPOINTS", "CHECKPOINT_BEST", "CHECKPOINT_LAST", "DEVICES", "OPTIMIZERS", "PROGRESS", "EvalResult", "Selection",
    "StateDiff", "TrainConfig", "TrainResult", "TrainSetup", "TrainStep", "TrainingDiverged", "build", "build_model",
    "check_checkpoint", "diff_state", "fit", "load_checkpoint", "load_prompts", "load_run_checkpoint", "make_optimizer",
    "make_scheduler", "resolve_clip", "resolve_device", "save_checkpoint", "train_one_epoch", "validate",
]
