"""The audit suite's data model: statuses, results, the audited target, the registry, the runner.

Results are data; rendering (markdown, JSON, JUnit, console) lives in :mod:`checks.report`.
"""
from __future__ import annotations

import contextlib
import contextvars
import enum
import inspect
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from videocoop.errors import VideoCoopError

from .locations import relpath

#: Evidence lines kept per result; the rest are counted, not shown.
MAX_EVIDENCE = 14
#: Characters kept of a result's one-line message.
MAX_MESSAGE = 300
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

    from videocoop.distributed import TrainStep

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
    """What the audits look at: a model in the CoOp layout and what is known around it.

    Args:
        model: ``model.prompt_learner`` (``forward()`` -> ``[n_cls, L, width]``, buffer
            ``tokenized_prompts``), ``model.text_encoder(prompts, tokenized_prompts)``,
            ``model(features [B, T, D])`` -> logits ``[B, n_cls]``.
        classnames: class names in label order.
        clip_model, tokenizer: the frozen open_clip model and its tokenizer; audits that
            compare against CLIP itself SKIP without them.
        dataset, val_dataset: datasets whose items unpack as ``(features, label, meta)``.
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
            loads the checkpoint into it); None: the audit loads into a deep copy instead.
        checkpoint: a checkpoint the run will load (resume, evaluate): its path, or the dict it
            holds; class-order compares its stored ``classnames`` with the prompts'.
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


_REGISTRY: dict[str, AuditSpec] = {}


def audit(id: str, *, title: str, problem: str, fix: str, remediation: str, correctness: bool = True):
    """Register an audit function under a stable public id.

    The function takes an :class:`AuditTarget` and returns an :class:`Outcome` (or raises
    :class:`Skip`). ``problem`` is the failure mode, ``fix`` what it verifies, and
    ``remediation`` what to do when it fails.
    """

    def register(func: Callable[[AuditTarget], Outcome]) -> Callable[[AuditTarget], Outcome]:
        if id in _REGISTRY and _REGISTRY[id].func.__qualname__ != func.__qualname__:
            warnings.warn(f"audit {id!r} registered twice; the later one wins", stacklevel=2)
        _REGISTRY[id] = AuditSpec(id, func, title, problem, fix, remediation, correctness)
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


def run_audit(spec: AuditSpec, target: AuditTarget) -> CheckResult:
    """Run one audit; a crash becomes ERROR, :class:`Skip` becomes SKIP."""
    start = time.perf_counter()
    try:
        out = spec.func(target)
        if out.status == Status.PASS and not (out.metrics or out.evidence):
            out = Outcome(Status.ERROR, "the audit examined nothing, so it cannot pass")
        if not spec.correctness and out.status == Status.FAIL:
            out.status = Status.WARN
    except Skip as e:
        out = Outcome(Status.SKIP, str(e))
    except Exception as e:  # noqa: BLE001: the audited code raised (a finding), or the audit crashed
        out = raised(e, target)
    message = out.message if len(out.message) <= MAX_MESSAGE else out.message[:MAX_MESSAGE - 3] + "..."
    evidence = list(out.evidence)
    if len(evidence) > MAX_EVIDENCE:
        evidence = evidence[:MAX_EVIDENCE] + [f"... {len(evidence) - MAX_EVIDENCE} more"]
    return CheckResult(
        id=spec.id, title=spec.title, status=out.status, message=message, problem=spec.problem,
        fix=spec.fix, remediation=spec.remediation, metrics=out.metrics, evidence=evidence,
        location=out.location, duration=round(time.perf_counter() - start, 3), extra=out.extra,
    )


#: Where libraries live: their frames are neither the audited code nor the audits.
_LIBRARIES = (os.path.dirname(os.path.abspath(torch.__file__)),)
_CHECKS = os.path.dirname(os.path.abspath(__file__))
_FAULTS = os.path.join(_CHECKS, "faults.py")  # the planted faults are audited code, not the audits'


def _library(filename: str) -> bool:
    if filename.startswith("<") or filename.startswith(os.path.dirname(os.__file__)):  # stdlib, <frozen ...>
        return True
    return filename.startswith(_LIBRARIES) or f"{os.sep}open_clip{os.sep}" in filename


def _code_of(target: AuditTarget) -> tuple[set[str], set[str]]:
    """``(directories, files)`` holding the audited code: the package (or file) of each of the
    model's module classes, of its datasets, its collate function, trainer and factories;
    libraries (torch, open_clip, the standard library) and the audits themselves left out."""
    objs: list[Any] = [type(m) for m in target.model.modules()] + [type(d) for _, d in target.datasets()]
    objs += [o for o in (target.collate_fn, target.trainer, target.make_optimizer, target.rebuild) if o is not None]
    dirs, files = set(), set()
    for obj in objs:
        name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
        module = sys.modules.get(name or "")
        path = getattr(module, "__file__", None)
        if not path or _library(os.path.abspath(path)):
            continue
        path = os.path.abspath(path)
        if path.startswith(_CHECKS):
            if path == _FAULTS:
                files.add(path)
            continue
        top = sys.modules.get(name.split(".")[0])
        if getattr(top, "__path__", None) and getattr(top, "__file__", None):
            dirs.add(os.path.dirname(os.path.abspath(top.__file__)))
        else:
            files.add(path)
    return dirs, files


#: What usually fixes an exception the model raises on its own inputs, by what its message says.
_FIXES = (
    (("dtype", "Half", "BFloat16", "scalar type"),
     "cast the inputs to the model's dtype in its forward (features.to(self.dtype), as CoOp casts its images), or "
     "keep the parts that meet the data in fp32: the features on disk are float32"),
    (("same device", "device type", "on cpu", "on cuda", "meta"),
     "register every tensor the forward reads as a buffer and build new tensors with device=x.device"),
    (("shape", "size", "dimension", "mat1 and mat2"),
     "make the forward accept what the trainer gives it: features [B, T, D] (D the CLIP's embedding dim) and, for "
     "padded batches, a mask [B, T]"),
)


def likely_fix(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    for words, fix in _FIXES:
        if any(w in text for w in words):
            return fix
    return "make the audited code run on the inputs training will give it (the frame above is where it broke)"


def raised(e: BaseException, target: AuditTarget) -> Outcome:
    """An exception out of an audit. Raised in the audited code (the model, its dataset, its
    collate, trainer or factories): a FAIL naming the exception, the frame and the likely fix.
    Raised anywhere else (the audit's own code, or CLIP called by it): ERROR, the audit crashed."""
    frames = traceback.extract_tb(e.__traceback__)
    message = (str(e).splitlines() or [""])[0]
    dirs, files = _code_of(target)
    for i in range(len(frames) - 1, -1, -1):  # the innermost frame of the audited code or of the audits decides
        path = os.path.abspath(frames[i].filename)
        if path.startswith(_CHECKS) and path != _FAULTS:
            break  # the audits' own code (or a hook of theirs) raised: the audit crashed
        if path in files or (dirs and path.startswith(tuple(dirs))):
            f = frames[i]
            where = f"{relpath(f.filename)}:{f.lineno}"
            audits = os.path.join(_CHECKS, "audits")
            caller = next((g for g in reversed(frames[:i]) if os.path.abspath(g.filename).startswith(audits)), None)
            evidence = [f"raised at {where} in {f.name}" + (f": {f.line}" if f.line else ""),
                        f"{type(e).__name__}: {message}"]
            if caller is not None:
                evidence.append(f"called by the audit at {relpath(caller.filename)}:{caller.lineno} ({caller.name}), "
                                f"with inputs such as training gives")
            evidence.append("a finding about the audited code, not a crash of the audit")
            fix = likely_fix(e)
            # the dataset when the frame is one of its methods (a fault file may hold a dataset and a model)
            who = "the dataset" if any(_source(type(d)) == path and hasattr(type(d), f.name)
                                       for _, d in target.datasets()) else "the model"
            return Outcome(Status.FAIL, f"{who} raised {type(e).__name__}: {message} at {where} ({f.name}); "
                           f"likely fix: {fix}", {"raised": type(e).__name__}, evidence, where)
    tb = frames[-1]
    return Outcome(Status.ERROR, f"the audit crashed: {type(e).__name__}: {e}",
                   evidence=[f"raised at {tb.filename}:{tb.lineno} in {tb.name}"])


def _source(obj) -> str | None:
    try:
        return os.path.abspath(inspect.getsourcefile(obj) or "")
    except TypeError:
        return None


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
    """The device of the :func:`run_audits` call in progress (None: the default)."""
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


def run_audits(target: Any, ids: Sequence[str] | None = None,
               progress: Callable[[CheckResult], None] | None = None, device: str | None = None) -> list[CheckResult]:
    """Run the audits ``ids`` (all when None) on ``target`` (an AuditTarget or a bare model).

    Every audit runs on the CPU; ``device`` says where the device audits move a copy of
    the model: ``"cuda"``, ``"cpu"`` (the meta device stands in) or None (CUDA when present).

    Raises:
        VideoCoopError: an unknown audit id (the message lists the valid ones), an unknown
            device, or ``"cuda"`` without CUDA.
    """
    target = AuditTarget.coerce(target)
    specs = [get_audit(i) for i in (ids or list_audits())]
    results = []
    with audit_device(device):
        for spec in specs:
            result = run_audit(spec, target)
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when nothing failed (WARN and SKIP allowed), 1 on any FAIL or ERROR."""
    return 1 if any(r.status.failed for r in results) else 0

