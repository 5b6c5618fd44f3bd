"""The audit suite's data model: statuses, results, the audited target, the registry, and the
device the device audits move a copy of the model to.

Running the audits (and judging what an audit raised) is :mod:`checks.runner`; rendering the
results (markdown, JSON, JUnit, console) is :mod:`checks.report`.
"""
from __future__ import annotations

import contextlib
import contextvars
import enum
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from videocoop import VideoCoopError

#: What ``run_audits(device=...)`` accepts: where the device audits move a copy of the model.
AUDIT_DEVICES = ("cpu", "cuda")
_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("checks_audit_device", default=None)


class Status(str, enum.Enum):
    """What an audit concluded. ``ERROR``: the audit itself crashed; ``SKIP``: it cannot apply."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"

    @property
    def failed(self) -> bool:
        """True for the statuses that make ``python -m checks`` exit 1."""
        return self in (Status.FAIL, Status.ERROR)


class Skip(Exception):
    """Raised by an audit that cannot apply to this target; the message is the reason."""


@dataclass
class Outcome:
    """What an audit function returns: its verdict and the measurements behind it."""

    status: Status
    message: str  # one line: the verdict with its deciding number
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    location: str | None = None  # file:line found by inspecting the audited object
    extra: dict[str, Any] = field(default_factory=dict)  # longer artefacts: trace, heatmap


@dataclass
class CheckResult:
    """One audit's result: the outcome plus the audit's description and timing."""

    id: str
    title: str
    status: Status
    message: str
    problem: str
    fix: str
    remediation: str
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    location: str | None = None
    duration: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``status`` is one of pass / warn / fail / error / skip."""
        d = asdict(self)
        d["status"] = self.status.value
        return d


def unwrap(model: Any) -> Any:
    """The model inside its training wrappers: DistributedDataParallel, DataParallel,
    ``torch.compile``'s module, videocoop's TrainStep. The audits read the CoOp layout
    (``prompt_learner``, ``text_encoder``), which a wrapper hides behind ``.module``."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    from videocoop.train import TrainStep

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(model, TrainStep):
            model = model.model
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


@runtime_checkable
class Trainer(Protocol):
    """What ``AuditTarget.trainer`` must offer: the seed's two loops, with its names and
    argument order (``videocoop.train`` is one; a module or an object both do)."""

    def train_one_epoch(self, model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, device: Any,
                        scheduler: Any = None) -> Any: ...

    def validate(self, model: nn.Module, loader: Any, device: Any, classnames: list[str]) -> Any: ...


@dataclass
class AuditTarget:
    """What the audits look at: a model of the CoOp family and what is known around it.

    Args:
        model: by default in the CoOp layout: ``model.prompt_learner()`` -> ``[n_cls, L, width]``
            with ``tokenized_prompts``, ``model.text_encoder(prompts, tokenized_prompts)``,
            ``model(features [B, T, D][, mask])`` -> logits ``[B, n_cls]``. Anywhere: the audits run it
            on its own device.
        classnames: class names in label order.
        clip_model, tokenizer: the open_clip model and its tokenizer; the audits hold the model to a
            clean CLIP of the same architecture with these weights (:func:`checks.reference.clean_clip`),
            and SKIP without them.
        dataset, val_dataset: datasets whose items unpack as ``(features, label, meta)`` (any integer
            label, any meta); their videos' frame count and width shape the audits' probes.
        collate_fn: the DataLoader collate function used in training (default collate if None).
        clip_name, weights: the CLIP architecture and weights id (``videocoop.clip.weights_id``)
            the model was built from, compared against the features' ``features.json``.
        trainer: a :class:`Trainer` (e.g. the ``videocoop.train`` module): ``train_one_epoch``
            and ``validate`` with the seed's signatures, to push one batch through.
        make_optimizer: ``model -> optimizer``, the optimiser the run trains with: gradient-flow checks
            what it holds, optimizer-step takes a few steps of it (None: AdamW with its defaults, said so).
        description: a line naming the model, weights and configuration, for the report.
        train_command: the command that trains exactly this configuration.
        rebuild: builds a new, untrained model of the same configuration (checkpoint-roundtrip
            loads the checkpoint into it; a model on the meta device is audited through it); None:
            the audit loads into a deep copy instead.
        checkpoint: a checkpoint the run will load (resume, evaluate): its path, or the dict it
            holds; class-order compares its stored ``classnames`` with the prompts'.

    The contract (docs/foreign_models.md; defaults in :data:`checks.contract.DECLARATIONS`): what a
    model that is not CoOp-shaped declares, each a callable taking the model first, so the audits
    can call it on the copies they move and train:
        logits: ``(model, features, mask | None) -> [B, n_cls]`` (a forward returning a tuple or a loss).
        loss: ``(model, features, labels, mask | None) -> scalar``, the training objective (an
            auxiliary loss, a training forward that takes the labels).
        prompts: ``(model, videos | None) -> [n_cls, L, width]``, or ``[B, n_cls, L, width]`` for
            prompts conditioned on each video.
        token_ids: ``(model) -> [n_cls, L]`` (any numeric dtype): the prompts' ids.
        encode_text: ``(model, prompts, ids) -> [n, E]``: the text encoder.
        frames: the frame count the model takes, when it is fixed.
        trainable_clip: fnmatch patterns of the model's parameter names that are CLIP's and train by
            design (fine-tuning, a trained logit scale).
        save_state, load_state: ``(model) -> dict`` and ``(model, state)``: the model's own
            checkpoint writer and loader.

    What training, the splits and several processes add (issue 20; defaults in :mod:`checks.contract`):
        train_step: ``(model, features, labels, mask | None, optimizer) -> loss``, one training step of the
            user's own loop, with its precision handling (default: ``loss``, backward, the optimiser's step).
        make_scheduler: ``optimizer -> scheduler`` stepped once per training step, the run's schedule
            (None: the optimiser's learning rate held, said so).
        distributed_step: ``(model, features, labels, mask | None, optimizer, rank, world_size) -> loss``,
            one step of this process's share of a global batch inside an initialised process group, as
            the run does it under torchrun (its wrapper, gathers, loss scaling, the step).
        shots: K of a K-shot training split (every class must hold exactly K videos).
        novel_classnames: the classes held out for base-to-novel (never among ``classnames``).

    Past one prompt per class (:data:`checks.contract.DECLARATIONS` says each one's default):
        prompts_per_class, combine: K prompts per class (a template ensemble): ``prompts`` gives
            ``[K, n_cls, L, width]`` (``[B, K, n_cls, L, width]`` per video), ``token_ids`` ``[K, n_cls, L]``;
            ``combine`` says how the K prompts' scores become one: ``"features"`` (the mean of the normalised
            text features), ``"probabilities"`` (each prompt's softmax, averaged), ``"max"`` (of the logits).
        output: ``"logits"`` or ``"probabilities"``: what the evaluation forward returns (None: detected).
        encode_video: ``(model, features, mask) -> [B, E]``, the video feature the scores use.
        text_features: ``(model, features, mask) -> [n_cls, E]``, ``[B, n_cls, E]`` (text conditioned on each
            video), ``[K, n_cls, E]`` or ``[B, K, n_cls, E]``: the class text the scores use.
        for_classes: ``(model, classnames) -> model``: the model scoring these classes instead.
        temporal, temporal_kind: ``(model, frames [B, T, D]) -> [B, T, D]``, the temporal head before
            pooling, and the operation it is (:data:`checks.contract.TEMPORAL_KINDS`).
        eval_temperature: the fixed temperature evaluation applies by design where training applies
            ``exp(logit_scale)``.
    """

    model: nn.Module
    classnames: Sequence[str]
    clip_model: nn.Module | None = None
    tokenizer: Any = None
    dataset: Any = None
    val_dataset: Any = None
    collate_fn: Callable | None = None
    clip_name: str | None = None
    weights: str | None = None
    trainer: Trainer | None = None
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
    description: str = ""
    train_command: str | None = None
    rebuild: Callable[[], nn.Module] | None = None
    checkpoint: Any = None
    # the contract: what differs from the CoOp layout (None: the layout's own call)
    logits: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], Any] | None = None
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    prompts: Callable[[nn.Module, torch.Tensor | None], torch.Tensor] | None = None
    token_ids: Callable[[nn.Module], torch.Tensor] | None = None
    encode_text: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    frames: int | None = None
    trainable_clip: Sequence[str] = ()
    save_state: Callable[[nn.Module], dict] | None = None
    load_state: Callable[[nn.Module, dict], None] | None = None
    # what training, the splits and several processes add (None / empty: the defaults, or SKIP naming it)
    train_step: Callable[..., Any] | None = None
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    distributed_step: Callable[..., Any] | None = None
    shots: int | None = None
    novel_classnames: Sequence[str] = ()
    # past one prompt per class: ensembles, text per video, no learned context, what a forward leaves behind
    prompts_per_class: int = 1
    combine: str | None = None
    output: str | None = None
    encode_video: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    text_features: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    for_classes: Callable[[nn.Module, list[str]], nn.Module] | None = None
    temporal: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    temporal_kind: str | None = None
    eval_temperature: float | None = None
    cache: dict = field(default_factory=dict, repr=False)  # shared measurements within one run

    def __post_init__(self):
        self.classnames = list(self.classnames)
        self.model = unwrap(self.model)

    @classmethod
    def coerce(cls, obj: Any, classnames: Sequence[str] | None = None) -> "AuditTarget":
        """An AuditTarget as is, or a bare model wrapped with its class names: ``classnames`` when
        given (``--classnames``), else the ones it carries (``model.classnames``,
        ``model.prompt_learner.classnames``).

        Raises:
            VideoCoopError: a bare model with no class names anywhere (the message says what it
                needs), or ``classnames`` that do not match its prompts' count.
        """
        if isinstance(obj, cls):
            obj.model = unwrap(obj.model)  # wrapped after construction, too
            return obj
        if isinstance(obj, nn.Module):
            obj = unwrap(obj)
            pl = getattr(obj, "prompt_learner", None)
            names = classnames or getattr(obj, "classnames", None) or getattr(pl, "classnames", None)
            rows = getattr(pl, "tokenized_prompts", None)
            n = rows.shape[0] if isinstance(rows, torch.Tensor) and rows.dim() == 2 else None
            if not names:
                count = f" ({n} prompts)" if n else ""
                raise VideoCoopError(
                    f"{type(obj).__name__} is a bare model without class names{count}: give them with --classnames "
                    f"FILE (one per line, label order; a feature folder's classnames.txt) or --classnames A,B,C, set "
                    f"model.classnames (or model.prompt_learner.classnames), or return "
                    f"AuditTarget(model, classnames, clip_model=..., tokenizer=..., dataset=...) from the --target "
                    f"function (the CLIP model, tokenizer and data let the other audits run too)")
            if n is not None and len(names) != n:
                raise VideoCoopError(f"{len(names)} class names for {type(obj).__name__}, whose prompt_learner holds "
                                     f"{n} prompts (tokenized_prompts {list(rows.shape)})")
            return cls(obj, names, description=f"{type(obj).__name__} (bare model)")
        raise VideoCoopError(f"the target must be an AuditTarget or an nn.Module, got {type(obj).__name__}")

    def datasets(self) -> list[tuple[str, Any]]:
        """``[(split, dataset)]`` for the datasets present."""
        return [(n, d) for n, d in (("train", self.dataset), ("val", self.val_dataset)) if d is not None]


@dataclass(frozen=True)
class AuditSpec:
    """A registered audit: its function and what it tells the reader."""

    id: str
    func: Callable[[AuditTarget], Outcome]
    title: str
    problem: str
    fix: str
    remediation: str
    correctness: bool = True  # False: at worst WARN (costs speed, not correctness)
    needs: tuple[str, ...] = ()  # what the target must give (checks.contract.NEEDS); unmet: SKIP, naming it


_REGISTRY: dict[str, AuditSpec] = {}


def audit(id: str, *, title: str, problem: str, fix: str, remediation: str, correctness: bool = True,
          needs: tuple[str, ...] = ()):
    """Register an audit function under a stable public id.

    The function takes an :class:`AuditTarget` and returns an :class:`Outcome` (or raises
    :class:`Skip`). ``problem`` is the failure mode, ``fix`` what it verifies, and
    ``remediation`` what to do when it fails. ``needs``: what the target must give
    (:data:`checks.contract.NEEDS`); the runner checks them first and SKIPs, naming what to declare.
    """

    def register(func: Callable[[AuditTarget], Outcome]) -> Callable[[AuditTarget], Outcome]:
        if id in _REGISTRY and _REGISTRY[id].func.__qualname__ != func.__qualname__:
            warnings.warn(f"audit {id!r} registered twice; the later one wins", stacklevel=2)
        _REGISTRY[id] = AuditSpec(id, func, title, problem, fix, remediation, correctness, tuple(needs))
        return func

    return register


def _load_audits() -> None:
    from . import audits  # noqa: F401  (registers every audit)


def list_audits() -> list[str]:
    """Every audit id, in report order."""
    _load_audits()
    return list(_REGISTRY)


def get_audit(id: str) -> AuditSpec:
    """The spec of one audit; an unknown id is named with the valid ones."""
    _load_audits()
    if id not in _REGISTRY:
        raise VideoCoopError(f"unknown audit {id!r}; valid audits: {', '.join(_REGISTRY)}")
    return _REGISTRY[id]


def resolve_device(device: str | None = None) -> torch.device:
    """The foreign device the device audits move a copy of the model to.

    ``"cuda"``: CUDA (refused where there is none); ``"cpu"``: the meta device, which holds
    no data, so a CPU-only run still sees every host read and stray CPU tensor; None: CUDA
    when present, else meta.

    Raises:
        VideoCoopError: an unknown device, or ``"cuda"`` without a CUDA device.
    """
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("meta")
    if device not in AUDIT_DEVICES:
        raise VideoCoopError(f"unknown audit device {device!r}; choose one of {', '.join(AUDIT_DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise VideoCoopError("audit device 'cuda': no CUDA device is present (torch.cuda.is_available() is False, "
                             f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                             "run on a machine with an NVIDIA GPU, or audit with device 'cpu'")
    return torch.device("cuda") if device == "cuda" else torch.device("meta")


def requested_device() -> str | None:
    """The device of the :func:`~checks.runner.run_audits` call in progress (None: the default)."""
    return _DEVICE.get()


@contextlib.contextmanager
def audit_device(device: str | None):
    """Run the audits inside the block with ``device`` (see :func:`resolve_device`)."""
    resolve_device(device)  # refuse an unknown device or a missing CUDA before anything runs
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def foreign_device() -> torch.device:
    """Where device audits move the model: the device ``run_audits`` was given (cuda, or meta
    for cpu); by default CUDA when present, else the meta device."""
    return resolve_device(requested_device())


def device_note(device: torch.device) -> str:
    """The device, and for meta why it stands in for a GPU."""
    if device.type == "meta":
        why = "a CPU-only run was asked for" if torch.cuda.is_available() else "no CUDA here"
        return (f"meta ({why}: the meta device stands in as the foreign device; it holds no data, "
                "so any host read or CPU tensor in the path shows)")
    return str(device)


_SPAWN: contextvars.ContextVar[bool] = contextvars.ContextVar("checks_spawn", default=False)


def spawning_allowed() -> bool:
    """Whether the audits that start processes (distributed-equivalence) may run: ``python -m checks
    --spawn``, ``run_audits(spawn=True)``, the self-test."""
    return _SPAWN.get()


@contextlib.contextmanager
def allow_spawn(allowed: bool = True):
    """Let the audits inside the block start processes (or not)."""
    token = _SPAWN.set(allowed)
    try:
        yield
    finally:
        _SPAWN.reset(token)
