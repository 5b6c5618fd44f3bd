"""checks: audits that run a CoOp-style model and measure each known failure mode.

``run_audits(target)`` returns one :class:`CheckResult` per audit; ``python -m checks``
builds the target, runs them and writes the reports.

The audits judge any model of the CoOp family: the CoOp layout by default, and where a model
differs, what its target declares (:mod:`checks.contract`; docs/foreign_models.md). So checks
uses videocoop only through the small surface below (a test holds this list to the imports).
The references a model is held to come from open_clip alone, a clean CLIP the suite rebuilds
with the target's weights (:mod:`checks.reference`), never from videocoop's text path or the
CLIP modules the model runs.

The audits and the runner:

    videocoop        VideoCoopError: the error a user can act on (a bad target, device or audit id)
    videocoop.train  TrainStep: a training wrapper the audits see through to the model
    videocoop.model  class_words: the words a class name puts in its prompt
    videocoop.data   VideoSample, collate_samples: our datasets' items and the collate that pads them
    videocoop.data   frame_indices: the segment-middle frames extraction-parity decodes
    videocoop.video  Extractor: where extraction-parity points when videocoop extract made the features
    videocoop.train  load_checkpoint, check_checkpoint, diff_state: videocoop's checkpoint reader (checkpoint-strictness)
    videocoop.train.checkpoint  REQUIRED_FIELDS: the fields that make a checkpoint videocoop train's
    videocoop        InputError: what the reader raises for a file it refuses (its problem is the finding)
    videocoop.utils.readers  load_torch: the reader under load_checkpoint, for a target's own layout (tensors and plain values only)
    videocoop.video  FrameClock: the frame times extraction-parity samples by, the extractor's (no timestamps too)

``python -m checks`` (which audits what ``videocoop train`` would train), the self-test and
the pytest plugin:

    videocoop        train: build, make_optimizer, make_scheduler, the seed's two loops, the checkpoint names,
                     load_run_checkpoint, build_model and load_prompts (the model over another class list)
    videocoop.cli    ExitCode, UsageError, CliParser, add_train_arguments, config_from_args: train's flags, codes
    videocoop.cli    print_user_error: a user error as one paragraph (its traceback on request)
    videocoop.utils  read_lines: the reader of text lists (--classnames FILE)
    videocoop.utils.files  write_text, atomic_write: the report, its JSON, JUnit and heatmap land atomically
    videocoop.clip   UntrainedModelWarning, weights_id_of, TINY_MODEL, load_clip: the weights' id; the tiny CLIP
    videocoop.data   UCF101, synthesize: the default target's class names and synthetic features
    videocoop.train  TrainStep, train_one_epoch: train's own step under torchrun (checks.distributed)
    videocoop.utils.distributed  World: the processes of that step

The planted faults (:mod:`checks.faults`), models and extractors built on ours:

    videocoop.clip   TINY_MODEL, embed_dim, load_clip: the tiny random-weight CLIP
    videocoop.model  VideoFeatureCLIP, masked_mean: the clean model each fault breaks
    videocoop.model  TextEncoder: the encoder the device and text faults subclass
    videocoop.model  PromptLearner: the prompts a fault rebuilds for a new class list
    videocoop.model  eot_positions: the EOT of each prompt, as those encoders pool it
    videocoop.data   FeatureDataset: the feature folder an extraction fault writes
    videocoop.video  ExtractConfig, Extractor, extract: extraction with one part swapped
    videocoop.video  Preprocess, Sampling: the parts swapped
    videocoop.video  synthesize_videos, encode_raw_h264: the tiny videos they extract (raw H.264: frames without timestamps)
    videocoop.clip   text_tower: where the foreign zoo's ports (checks.faults.zoo) find CLIP's text modules

The names below load :mod:`checks.core` or :mod:`checks.runner` (and torch) on first use:
the pytest plugin (:mod:`checks.pytest_plugin`) is imported by every pytest session once
videocoop is installed, and must cost nothing there unless asked.
"""
import importlib
from typing import TYPE_CHECKING

__all__ = ["AuditTarget", "CheckResult", "Outcome", "Skip", "Status", "audit", "exit_code", "list_audits", "run_audits"]
_IN_RUNNER = ("exit_code", "run_audits")  # the others are checks.core's

if TYPE_CHECKING:
    from .core import AuditTarget, CheckResult, Outcome, Skip, Status, audit, list_audits
    from .runner import exit_code, run_audits


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".runner" if name in _IN_RUNNER else ".core", __name__), name)
    raise AttributeError(f"module 'checks' has no attribute {name!r}")
