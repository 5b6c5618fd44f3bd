"""Watching a forward pass: tensors reaching every submodule, and reads back to the host."""
from __future__ import annotations

import inspect
import os
import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from . import contract
from .core import AuditTarget
from .inputs import probe_batch
from .locations import CHECKS, FAULTS, relpath
from .models import copy_model, handed_over, run_model

# Tensor methods that hand a value to Python: on CUDA each one waits for the device.
HOST_READS = frozenset({"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"})
_SKIP_DIRS = (os.path.dirname(torch.__file__), CHECKS)
_ATTRIBUTES = frozenset({"__get__", "dim", "size", "numel", "is_floating_point", "__len__"})


def audited_code(filename: str) -> bool:
    """Whether a frame's file is the audited code's: not torch's, not the audits' (the planted faults are)."""
    return (filename.startswith(FAULTS) or not filename.startswith(_SKIP_DIRS)) and "<frozen" not in filename


def placed(t: torch.Tensor) -> str:
    """``[shape] dtype on device`` of a tensor, as the device audits' evidence names it."""
    return f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device.type}"


def call_site() -> str:
    """``file:line (function)`` of the innermost frame outside torch and checks."""
    for frame in reversed(traceback.extract_stack()):
        if audited_code(frame.filename):
            return f"{relpath(frame.filename)}:{frame.lineno} ({frame.name})"
    return "unknown"


def _placeholder(name: str, t: torch.Tensor):
    """A stand-in value for a host read of a meta tensor, so the forward can go on."""
    if name == "tolist":
        return torch.zeros(t.shape, dtype=t.dtype).tolist()
    if name == "__bool__":
        return False
    if name == "__float__" or (name == "item" and t.dtype.is_floating_point):
        return 0.0
    return 0


def _moves_to_cpu(name: str, args, kwargs) -> bool:
    if name == "cpu":
        return True
    if name != "to":
        return False
    for a in list(args[1:]) + list(kwargs.values()):
        if isinstance(a, torch.device) and a.type == "cpu" or isinstance(a, str) and a.split(":")[0] == "cpu":
            return True
    return False


def _mixes_cpu(args, kwargs) -> torch.device | None:
    """The foreign device when the arguments hold a non-scalar CPU tensor next to a tensor on
    another device (a CPU index into device states: an error or a hidden copy on CUDA)."""
    tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    foreign = next((t.device for t in tensors if t.device.type != "cpu"), None)
    if foreign is not None and any(t.device.type == "cpu" and t.dim() > 0 for t in tensors):
        return foreign
    return None


@dataclass
class HostEvent:
    kind: str  # "read" (value to Python), "move" (tensor copied to the CPU), "mix" (CPU tensor meets a device one)
    op: str
    site: str
    device: str
    cpu: tuple = ()  # "mix": the CPU tensors the op was given (kept, so the model's attributes can name them)


class HostWatch(TorchFunctionMode):
    """Records every host read and CPU copy of a device tensor, and every op mixing a CPU
    tensor with a device one, during a forward.

    On the meta device a host read cannot return data: it is answered with the value the same
    read gave in a forward on the model's own device (``answers``, in order), else a placeholder
    (0, False, zeros), and recorded: a correct forward goes on (a host read that trims padding
    gets the real length) and every read is found, not only the first. Copies to the CPU are
    recorded and left to fail on meta.
    """

    def __init__(self, trace: "InputTrace | None" = None, answers: list | None = None):
        super().__init__()
        self.events: list[HostEvent] = []
        self.trace = trace  # each op is counted under the module running it
        self.ops = 0
        self.op_tensors = 0
        self.answers = list(answers or [])
        self.answered = 0  # host reads answered with the value the home device gave
        # every non-scalar CPU tensor an op was given while the model ran elsewhere: id -> (tensor, ops, first site)
        self.cpu_reads: dict[int, tuple[torch.Tensor, list[str], str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        t = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name not in _ATTRIBUTES:  # .shape, .device, .dim(): reads of metadata, not computation
            self.ops += 1
            self.op_tensors += sum(isinstance(a, torch.Tensor) for a in tree_flatten((args, kwargs))[0])
            if self.trace is not None and self.trace.stack and name:
                self.trace.stack[-1].ops[name] += 1
        if name not in _ATTRIBUTES:
            for a in tree_flatten((args, kwargs))[0]:
                if isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dim() > 0:
                    seen = self.cpu_reads.get(id(a))
                    if seen is None:
                        self.cpu_reads[id(a)] = (a, [name], call_site())
                    elif name not in seen[1]:
                        seen[1].append(name)
        mixed = _mixes_cpu(args, kwargs)
        if mixed is not None:
            cpu = tuple(a for a in tree_flatten((args, kwargs))[0]
                        if isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dim() > 0)
            self.events.append(HostEvent("mix", f"{name or func} given a CPU tensor and a {mixed.type} tensor", call_site(),
                                         mixed.type, cpu))
        if t is not None and t.device.type != "cpu":
            if name in HOST_READS:
                self.events.append(HostEvent("read", f"Tensor.{name}()", call_site(), t.device.type))
                if t.device.type == "meta":
                    return self._answer(name, t)
            elif _moves_to_cpu(name, args, kwargs):
                self.events.append(HostEvent("move", f"Tensor.{name}(cpu)", call_site(), t.device.type))
        return func(*args, **kwargs)

    def _answer(self, name: str, t: torch.Tensor):
        if self.answers:
            op, value = self.answers.pop(0)
            if op == name:
                self.answered += 1
                return value
            self.answers = []  # out of step with the home forward: placeholders from here on
        return _placeholder(name, t)

    def of_kind(self, kind: str) -> list[HostEvent]:
        return [e for e in self.events if e.kind == kind]


class HostRecorder(TorchFunctionMode):
    """The values a forward on the model's own device hands to Python, in order: what the meta
    forward's host reads are answered with."""

    def __init__(self):
        super().__init__()
        self.answers: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in HOST_READS and args and isinstance(args[0], torch.Tensor):
            self.answers.append((name, out))
        return out


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{list(x.shape)} {str(x.dtype).replace('torch.', '')} on {x.device.type}"
    return type(x).__name__


def _tensors(obj, prefix: str, out: list, depth: int = 0):
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif depth < 3 and isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _tensors(v, f"{prefix}[{i}]", out, depth + 1)
    elif depth < 3 and isinstance(obj, dict):
        for k, v in obj.items():
            _tensors(v, f"{prefix}[{k!r}]", out, depth + 1)


@dataclass
class Call:
    module: str
    inputs: list[tuple[str, str]]  # (argument, description)
    output: str = ""
    ops: Counter = field(default_factory=Counter)  # torch functions run by the module itself (not its children)


@dataclass
class InputTrace:
    """Forward pre-hooks on every submodule: each tensor that reaches one, and its device."""

    model: nn.Module
    device: torch.device
    calls: list[Call] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    tensors_seen: int = 0
    stack: list[Call] = field(default_factory=list)  # the calls running now, innermost last

    def __enter__(self):
        self._handles = []
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._pre(name or "model"), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post(name or "model")))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return False

    def _pre(self, name: str):
        def hook(module, args, kwargs):
            found: list = []
            params = _arg_names(module)
            for i, a in enumerate(args):
                _tensors(a, params[i] if i < len(params) else f"arg{i}", found)
            for k, v in kwargs.items():
                _tensors(v, k, found)
            self.tensors_seen += len(found)
            for arg, t in found:
                if t.device.type != self.device.type:
                    self.mismatches.append(f"{name}({arg}): {_describe(t)}, the model is on {self.device.type}")
            self.calls.append(Call(name, [(arg, _describe(t)) for arg, t in found]))
            self.stack.append(self.calls[-1])
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            for call in reversed(self.calls):
                if call.module == name and not call.output:
                    call.output = _describe(output)
                    break
            while self.stack and self.stack[-1].module != name:  # a child that raised left its frame
                self.stack.pop()
            if self.stack:
                self.stack.pop()
        return hook

    def path(self, max_depth: int = 2) -> list[str]:
        """The calls down to ``max_depth`` dots, repeats collapsed: the traced path."""
        lines, last = [], None
        for c in self.calls:
            depth = 0 if c.module == "model" else c.module.count(".") + 1
            if depth > max_depth:
                continue
            ins = ", ".join(f"{a} {d}" for a, d in c.inputs) or "no tensor inputs"
            ops = ", ".join(f"{op} x{n}" for op, n in c.ops.most_common(4))
            line = f"{'  ' * depth}{c.module}({ins}) -> {c.output or '?'}" + (
                f"  [ops: {ops}{', ...' if len(c.ops) > 4 else ''}]" if ops else "")
            if line != last:
                lines.append(line)
            last = line
        return lines


def _arg_names(module: nn.Module) -> list[str]:
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return []
    return [p for p in params if p != "self"]


@dataclass
class ForeignRun:
    """One forward of a copy of the model moved to a foreign device, fully watched."""

    device: torch.device
    moved: list[str]  # "name [shape] dtype: cpu -> device" for each parameter/buffer kind
    trace: InputTrace
    host: HostWatch
    output: str = ""
    error: str | None = None
    error_site: str | None = None
    data_dependent: bool = False  # stopped at an op whose output shape depends on the data (meta cannot run it)
    paths: list[str] = field(default_factory=list)  # which path each device-dependent module took
    model: nn.Module | None = None  # the moved copy, as the forward left it


def cuda_paths(model: nn.Module, pin: bool) -> list[str]:
    """The path each module that picks its path by device type takes on CUDA (videocoop's
    TextEncoder: ``shared_prefix`` 'auto' runs the plain path or a shared-prefix one per device).
    ``pin``: the meta device stands in for CUDA, so set such a module to CUDA's choice and the
    traced forward runs what CUDA would."""
    notes = []
    for name, m in model.named_modules():
        choose, mode = getattr(m, "shared_mode", None), getattr(m, "shared_prefix", None)
        if not callable(choose) or not isinstance(mode, str):
            continue
        on_cuda = choose(torch.device("cuda"), 1 << 30)  # any prefix long enough to share
        path = "the plain path" if on_cuda == "off" else f"the {on_cuda!r} shared-prefix path"
        note = f"{name}.shared_prefix={mode!r}: on CUDA it runs {path}"
        if pin and mode != on_cuda:
            m.shared_prefix = on_cuda
            note += "; pinned to it for the meta forward, which stands in for CUDA"
        notes.append(note)
    return notes


def foreign_run(target: AuditTarget, device: torch.device) -> ForeignRun:
    """Move a copy of the model to ``device`` and run its forward there (``checks.contract.logits``),
    watched. On meta, host reads are answered with the values a forward on the model's own device
    gave (that forward runs only when the meta one made host reads).

    Cached per device for the run: several audits read the same observation.
    """
    key = f"foreign:{device}"
    if key in target.cache:
        return target.cache[key]
    run = _foreign_run(target, device, None)
    if device.type == "meta" and run.host.of_kind("read"):
        recorder = HostRecorder()
        try:
            with recorder:
                run_model(target, probe_batch(target, 2)[0])
        except Exception:  # noqa: BLE001: then the placeholders stay; the device audits report the forward
            recorder.answers = []
        if recorder.answers:
            run = _foreign_run(target, device, recorder.answers)
    target.cache[key] = run
    return run


def _foreign_run(target: AuditTarget, device: torch.device, answers: list | None) -> ForeignRun:
    model = copy_model(handed_over(target))  # as handed over: what the audits' own forwards left is forward-state's
    before = {n: t.device.type for n, t in _named_tensors(model)}
    model.to(device).eval()
    moved = [f"{n} {_describe(t)} (was {before[n]})" for n, t in _named_tensors(model) if n.startswith("prompt_learner.")]
    paths = cuda_paths(model, pin=device.type == "meta")
    features = probe_batch(target, 2, device=device)[0]
    trace = InputTrace(model, device)
    run = ForeignRun(device, moved, trace, HostWatch(trace, answers), paths=paths, model=model)
    try:
        with torch.no_grad(), run.trace, run.host:
            out = contract.logits(target, model, features)
        run.output = _describe(out)
    except Exception as e:  # noqa: BLE001: the failure is the observation
        run.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        # nonzero, boolean-mask indexing, unique...: no meta kernel, because the output shape
        # depends on the values; on CUDA they work but wait for the device (a host sync).
        run.data_dependent = device.type == "meta" and isinstance(e, NotImplementedError) and (
            "data-independent" in str(e) or "Meta kernel" in str(e))
        frames = [f for f in traceback.extract_tb(e.__traceback__) if audited_code(f.filename)]
        if frames:
            run.error_site = f"{relpath(frames[-1].filename)}:{frames[-1].lineno} ({frames[-1].name})"
    return run


def _named_tensors(model: nn.Module):
    yield from model.named_parameters()
    yield from model.named_buffers()
