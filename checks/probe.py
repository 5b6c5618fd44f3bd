"""What the audits use to poke a model: locations, devices, cached text features, inputs."""
from __future__ import annotations

import contextlib
import copy
import inspect
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.data import VideoSample, collate_samples
from videocoop.model import class_words

from . import reference
from .core import AuditTarget, Skip, relpath, requested_device, resolve_device

#: fp32 agreement demanded where two paths compute the same numbers (relative to the scale).
FP32_TOL = 1e-5
#: In half precision two correct computations of the same features differ by rounding, by
#: about as much as each differs from fp32. The noise floor is measured in the audit: CLIP's
#: own encode_text in the model's precision against an fp32 copy of it, on the probe classes.
#: A comparison FAILs only beyond NOISE_FACTOR times that floor. Measured with random
#: ViT-B-32 (30 UCF101 classes, 3 context seeds) and the tiny model (5 classes, 20 seeds),
#: bf16 and fp16: floors 1.1-1.4e-2 (bf16) and 1.3-1.7e-3 (fp16); correct models (plain and
#: shared-prefix paths, EOT and mean pooling, ctx_init) differed by at most 2.5x the floor
#: (the tiny model's shared prefix in bf16; ViT-B-32: 1.6x); the planted faults by at least
#: 24x (causal-mask on a kept permute, ViT-B-32 bf16: 0.33). 8 is about 3x clear of both.
NOISE_FACTOR = 8
#: Half precision when no floor can be measured (no CLIP model in the encoder's precision and
#: an encoder that cannot be copied): this many machine epsilons stand in for it (the floors
#: above are 3.5 eps in bf16, 1.7 eps in fp16).
FALLBACK_FLOOR_EPS = 4
#: Classes sampled by the per-class probes (alone vs together, template parity, causal mask).
PROBE_CLASSES = 8


def locate(obj, pattern: str | None = None) -> str | None:
    """``file:line`` of ``obj`` (a class, function or method), from ``inspect``.

    With ``pattern`` (a regex), the first line of its source matching it, so the report
    points at the line that matters (``register_buffer("tokenized_prompts"…``), not the ``def``.
    """
    obj = inspect.unwrap(getattr(obj, "__func__", obj))
    try:
        path = inspect.getsourcefile(obj)
        lines, start = inspect.getsourcelines(obj)
    except (TypeError, OSError):
        return None
    if path is None:
        return None
    line = start
    if pattern is not None:
        rx = re.compile(pattern)
        for i, text in enumerate(lines):
            if rx.search(text) and not text.lstrip().startswith("#"):
                line = start + i
                break
    return f"{relpath(path)}:{line}"


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


def prompt_learner(target: AuditTarget) -> nn.Module:
    pl = getattr(target.model, "prompt_learner", None)
    if pl is None:
        raise Skip(f"{type(target.model).__name__} has no prompt_learner (not the CoOp layout)")
    return pl


def text_encoder(target: AuditTarget) -> nn.Module:
    te = getattr(target.model, "text_encoder", None)
    if te is None:
        raise Skip(f"{type(target.model).__name__} has no text_encoder (not the CoOp layout)")
    return te


def need_clip(target: AuditTarget, tokenizer: bool = False) -> nn.Module:
    if target.clip_model is None or (tokenizer and target.tokenizer is None):
        raise Skip("the target gives no CLIP model" + (" and tokenizer" if tokenizer else "")
                   + ": return AuditTarget(model, classnames, clip_model=..., tokenizer=...) to run it")
    return target.clip_model


def eot_token_id(target: AuditTarget) -> int | None:
    """The EOT id: the tokenizer's, the prompt learner's, or None (argmax convention)."""
    for owner in (target.tokenizer, getattr(target.model, "prompt_learner", None)):
        value = getattr(owner, "eot_token_id", None)
        if value is not None:
            return int(value)
    return None


def eot_index(target: AuditTarget, tokens: torch.Tensor) -> torch.Tensor:
    return reference.eot_positions(tokens, eot_token_id(target))


def class_word_list(target: AuditTarget) -> list[str]:
    """The words each class contributes to its prompt (the learner's own when it says)."""
    words = getattr(getattr(target.model, "prompt_learner", None), "class_words", None)
    return list(words) if words else [class_words(c) for c in target.classnames]


def prompts_and_tokens(target: AuditTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's prompt embeddings ``[n_cls, L, width]`` and token ids ``[n_cls, L]``."""
    pl = prompt_learner(target)
    with torch.no_grad():
        prompts = pl()
    return prompts.detach(), pl.tokenized_prompts


def encode(target: AuditTarget, prompts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The target's text encoder on given prompts, fp32 ``[n, E]``, no grad."""
    with torch.no_grad():
        return text_encoder(target)(prompts, tokens).float()


def plain_text_features(target: AuditTarget) -> torch.Tensor:
    """``text_encoder(prompt_learner(), tokenized_prompts)``, the CoOp call, ``[n_cls, E]``
    (unnormalised), computed once per run.

    When the CLIP model is known, its text transformer's output is kept as well
    (``target.cache["hidden"]``), so other poolings of the same states cost no second pass.
    """
    if "text_plain" not in target.cache:
        prompts, tokens = prompts_and_tokens(target)
        captured = []
        handle = None
        if target.clip_model is not None:
            handle = reference.tower(target.clip_model).transformer.register_forward_hook(
                lambda m, a, out: captured.append(out.detach()))
        try:
            target.cache["text_plain"] = encode(target, prompts, tokens)
        finally:
            if handle is not None:
                handle.remove()
        hidden = captured[-1] if len(captured) == 1 else None
        if hidden is not None and hidden.shape[:2] == tokens.shape:
            target.cache["hidden"] = hidden  # [n_cls, L, width], batch-first
    return target.cache["text_plain"]


@contextlib.contextmanager
def preserved_modes(model: nn.Module):
    """Every module's train/eval flag as it was, whatever the block does: an audit must not
    change the object it audits."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def run_model(target: AuditTarget, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``target.model(features[, mask])`` in eval mode without gradients, the model's modes left as
    they were (a BatchNorm's running statistics do not move either)."""
    model = target.model
    with preserved_modes(model), torch.no_grad():
        model.eval()
        return model(features) if mask is None else model(features, mask)


def forward_text_features(target: AuditTarget) -> torch.Tensor | None:
    """What ``text_encoder`` returns inside the model's own forward ``[n_cls, E]``: the path
    training takes (a model may pass the encoder more than the CoOp call, e.g. our
    shared-prefix layout). None when the forward fails or never calls ``text_encoder``
    (the device and dataset audits report why)."""
    if "text_forward" not in target.cache:
        captured = []

        def keep(module, args, kwargs, out):
            prompts = args[0] if args else next(iter(kwargs.values()), None)
            if isinstance(out, torch.Tensor) and isinstance(prompts, torch.Tensor):
                captured.append((tuple(prompts.shape), out.detach()))

        handle = text_encoder(target).register_forward_hook(keep, with_kwargs=True)
        try:
            param = next(iter(target.model.parameters()), None)
            x, _ = sample_batch(target, batch=2, frames=4, device=param.device if param is not None else "cpu")
            run_model(target, x)
        except Exception:  # noqa: BLE001: index-device-consistency and dataset-unpacking report it
            captured = []
        finally:
            handle.remove()
        target.cache["text_call"] = captured[0] if len(captured) == 1 else None  # (prompts shape, raw output)
        target.cache["text_forward"] = captured[0][1].float() if captured else None
    return target.cache["text_forward"]


class FrozenText(nn.Module):
    """Stands in for the text encoder in the video audits: given the model's own prompts (their
    shape as recorded), it returns what the real encoder returned for them in the model's
    forward; the class text features do not depend on the videos, so a forward then costs the
    video path alone. Any other input goes to the real encoder."""

    def __init__(self, real: nn.Module, shape: tuple, output: torch.Tensor):
        super().__init__()
        self.__dict__["real"] = real  # not a submodule: neither copied nor moved with the model
        self.shape, self.output = shape, output

    def forward(self, prompts, *args, **kwargs):
        if tuple(prompts.shape) == self.shape:
            return self.output.to(prompts.device)
        return self.real(prompts, *args, **kwargs)

    def __getattr__(self, name):  # .dtype, .pool, ...: the real encoder's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["real"], name)


def video_copy(target: AuditTarget) -> tuple[nn.Module, str]:
    """A deep copy of the model for the audits of its video half, and an evidence line saying how
    it was made: its text encoder replaced by :class:`FrozenText` when the model's forward called
    it once on its prompts (an exact stand-in: the text does not depend on the videos), else a
    plain copy."""
    forward_text_features(target)
    call = target.cache.get("text_call")
    te = getattr(target.model, "text_encoder", None)
    if te is None or call is None:
        return copy_model(target.model), "a deep copy of the model (its text encoder runs in every forward)"
    try:
        model = copy.deepcopy(target.model, memo={id(te): FrozenText(te, *call)})
    except Exception as e:  # noqa: BLE001: the reason goes into the report
        raise Skip(f"the model cannot be deep-copied ({type(e).__name__}: {e}); this audit needs a copy") from e
    return model, ("a copy of the model whose text encoder returns the class text features its own forward "
                   f"computed ({list(call[1].shape)}): they do not depend on the videos")


def takes_mask(model: nn.Module) -> bool:
    """Whether ``model(features, mask)`` is accepted: a second parameter (or ``*args``) in its forward."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def logits_tolerance(logits: torch.Tensor) -> float:
    """How far two computations of the same logits may differ (relative per row): fp32 rounding
    for fp32 logits; half precision: what the text tolerance allows in the fallback case."""
    if logits.dtype in (torch.float32, torch.float64):
        return FP32_TOL
    return NOISE_FACTOR * FALLBACK_FLOOR_EPS * torch.finfo(logits.dtype).eps


def video_location(model: nn.Module, pattern: str | None = None) -> str | None:
    """Where the model turns frame features into a video feature: ``encode_video``, else ``forward``."""
    cls = type(model)
    fn = getattr(cls, "encode_video", None) or cls.forward
    return locate(fn, pattern) if pattern else locate(fn)


def text_features(target: AuditTarget) -> torch.Tensor:
    """The model's class text features ``[n_cls, E]`` (unnormalised) as its own forward
    computes them, else as the CoOp call :func:`plain_text_features` does."""
    forward = forward_text_features(target)
    plain = plain_text_features(target)
    return forward if forward is not None and forward.shape == plain.shape else plain


def probe_classes(n: int, k: int = PROBE_CLASSES) -> list[int]:
    """Up to ``k`` class indices spread evenly over ``n`` (always the first and the last)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a text path computes in: its ``dtype``, its transformer's cast dtype, or fp32."""
    dtype = getattr(module, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    get = getattr(getattr(module, "transformer", None), "get_cast_dtype", None)
    return get() if get is not None else torch.float32


@dataclass(frozen=True)
class Tolerance:
    """How far two computations of the same text features may differ (relative, per class)."""

    value: float
    floor: float | None  # the measured noise floor of the model's precision (None: fp32, or not measurable)
    note: str  # an evidence line: how the value was chosen
    precision: str = "float32"

    def __str__(self) -> str:
        """For a verdict: ``1e-05``, or ``0.11 = 8 x the bfloat16 noise floor 1.4e-02``."""
        if self.floor is None:
            return f"{self.value:g}"
        return f"{self.value:.2g} = {NOISE_FACTOR} x the {self.precision} noise floor {self.floor:.1e}"

    def metrics(self) -> dict[str, float | None]:
        return {"tolerance": self.value, "noise_floor": self.floor}


def tolerance(target: AuditTarget) -> Tolerance:
    """The tolerance of this model's precision, measured once per run.

    fp32 (and amp, whose weights are fp32): :data:`FP32_TOL`. Half precision:
    :data:`NOISE_FACTOR` times the noise floor: CLIP's encode_text in that precision against
    an fp32 copy, on the probe classes' own ids under EOT and mean pooling; without a CLIP
    model in that precision, the model's text encoder against an fp32 copy of it.
    """
    if "tolerance" not in target.cache:
        target.cache["tolerance"] = _tolerance(target)
    return target.cache["tolerance"]


def _tolerance(target: AuditTarget) -> Tolerance:
    te = text_encoder(target)
    dtype = compute_dtype(te)
    if dtype == torch.float32:
        return Tolerance(FP32_TOL, None, f"the text encoder computes in fp32: tolerance {FP32_TOL:g}")
    name = str(dtype).removeprefix("torch.")
    clip = target.clip_model
    prompts, tokens = prompts_and_tokens(target)
    idx = probe_classes(tokens.shape[0])
    if clip is not None and compute_dtype(reference.tower(clip)) == dtype:
        low = encode_text_references(target, tokens[idx])
        high = encode_text_references(target, tokens[idx], fp32_copy(clip))
        floor = max(float(rel_diff(low[k], high[k]).max()) for k in low)
        how = f"CLIP's own encode_text in {name} against an fp32 copy (EOT and mean pooling"
    else:
        why = "no CLIP model given" if clip is None else "CLIP computes in another precision"
        try:
            te32 = copy_model(te).float()
        except Skip:
            floor = FALLBACK_FLOOR_EPS * torch.finfo(dtype).eps
            return Tolerance(NOISE_FACTOR * floor, floor, f"the text encoder computes in {name}; {why} and the encoder "
                             f"cannot be copied, so the floor is not measured: {FALLBACK_FLOOR_EPS} x {name}'s machine "
                             f"epsilon = {floor:.1e} stands in; FAIL beyond {NOISE_FACTOR} x it", name)
        with torch.no_grad():
            high = te32(prompts[idx], tokens[idx]).float()
        floor = float(rel_diff(encode(target, prompts[idx], tokens[idx]), high).max())
        how = f"the model's text encoder in {name} against an fp32 copy of it ({why}"
    value = max(NOISE_FACTOR * floor, FP32_TOL)
    return Tolerance(value, floor, f"{name} noise floor {floor:.2e}: {how}, {len(idx)} classes, relative); FAIL "
                                   f"beyond {NOISE_FACTOR} x the floor = {value:.2e}", name)


def fp32_copy(clip: nn.Module) -> nn.Module:
    """An fp32 copy of CLIP's text path. The image tower is left out (deepcopy's memo maps it
    to None): encode_text never reads it, and it can be most of the model."""
    visual = getattr(clip, "visual", None)
    return copy.deepcopy(clip, memo={id(visual): None} if visual is not None else None).float()


def encode_text_references(target: AuditTarget, ids: torch.Tensor, clip: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """``clip.encode_text`` of ``ids`` (padded to the context length) ``[n, E]`` fp32, and the
    same pass's transformer states mean-pooled over 0..EOT (the seed's pooling), both from
    open_clip alone (:mod:`checks.reference`).

    ``clip``: the target's CLIP model when None.
    """
    return reference.encode_text(target.clip_model if clip is None else clip, ids, mean=True)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row ``max|a - b| / max|b|`` for ``[n, E]`` tensors."""
    scale = b.abs().amax(dim=-1).clamp_min(1e-12)
    return (a.float() - b.float()).abs().amax(dim=-1) / scale


def feature_dim(target: AuditTarget) -> int:
    """The frame-feature width the model expects."""
    dim = getattr(target.model, "embed_dim", None)
    if isinstance(dim, int):
        return dim
    return int(plain_text_features(target).shape[-1])


def sample_batch(target: AuditTarget, batch: int = 4, frames: int = 8, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random frame features ``[B, T, D]`` and labels ``[B]`` (seeded), on ``device``."""
    n_cls = len(target.classnames)
    shape = (batch, frames, feature_dim(target))
    if torch.device(device).type == "meta":
        return torch.empty(shape, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    y = torch.arange(batch) % n_cls
    return x.to(device), y.to(device)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy, so audits that move or train the model leave the user's untouched."""
    try:
        return copy.deepcopy(model)
    except Exception as e:  # noqa: BLE001: the reason goes into the report
        raise Skip(f"the model cannot be deep-copied ({type(e).__name__}: {e}); this audit needs a copy to move or train") from e


def clip_param_names(target: AuditTarget) -> set[str]:
    """Names of the model's parameters that are CLIP's own.

    Everything under ``text_encoder``, plus any parameter shared with ``clip_model`` or equal
    to one of its parameters of the same name (a model may hold its own copy of CLIP).
    """
    named = dict(target.model.named_parameters(remove_duplicate=False))
    names = {n for n in named if n.startswith("text_encoder.")}
    if target.clip_model is not None:
        clip_params = dict(target.clip_model.named_parameters())
        clip_ptrs = {p.data_ptr() for p in clip_params.values()}
        names |= {n for n, p in named.items() if p.data_ptr() in clip_ptrs or _copied(n, p, clip_params)}
    return names


def _copied(name: str, p: torch.Tensor, clip_params: dict[str, torch.Tensor]) -> bool:
    """``p`` equals the CLIP parameter its name ends with (a constant, e.g. a zero bias, proves nothing)."""
    q = next((q for k, q in clip_params.items() if name == k or name.endswith("." + k)), None)
    if q is None or q.shape != p.shape or p.numel() < 2:
        return False
    a = p.detach().cpu()
    return not torch.all(a == a.flatten()[0]) and torch.equal(a, q.detach().cpu())


def stats(features: torch.Tensor) -> dict[str, float]:
    """Spread of L2-normalised class features ``[n, E]``.

    Mean and max off-diagonal cosine, each class's margin (1 - cosine to its nearest
    other class: min and mean), and the effective rank (exp of the entropy of the
    normalised singular values; n when all directions are used equally, 1 when collapsed).
    """
    f = F.normalize(features.float(), dim=-1)
    n = f.shape[0]
    cos = f @ f.t()  # [n, n]
    off = cos.masked_fill(torch.eye(n, dtype=torch.bool), float("nan"))
    nearest = torch.nan_to_num(off, nan=-2.0).amax(dim=1)  # [n]
    s = torch.linalg.svdvals(f.double())
    p = s / s.sum()
    p = p[p > 0]
    return {
        "mean_cos": float(off.nanmean()),
        "max_cos": float(nearest.max()),
        "min_margin": float((1 - nearest).min()),
        "mean_margin": float((1 - nearest).mean()),
        "effective_rank": float(torch.exp(-(p * p.log()).sum())),
    }


def cosine_matrix(features: torch.Tensor) -> torch.Tensor:
    f = F.normalize(features.float(), dim=-1)
    return f @ f.t()



def collate_for(target: AuditTarget, dataset) -> tuple[object, str]:
    """The collate function a DataLoader over ``dataset`` trains with, and a line saying which:
    the target's ``collate_fn``; for our datasets (items are ``VideoSample``) our
    ``collate_samples``, which pads videos of different lengths and masks them; else None
    (the DataLoader's default collate, which stacks equal shapes only)."""
    if target.collate_fn is not None:
        return target.collate_fn, f"the target's collate_fn ({getattr(target.collate_fn, '__qualname__', target.collate_fn)})"
    if len(dataset) and isinstance(dataset[0], VideoSample):
        return collate_samples, ("videocoop.data.collate_samples: the dataset yields VideoSample and the target "
                                 "names no collate_fn")
    return None, "the DataLoader's default collate (the target names no collate_fn)"


def training_batch(target: AuditTarget, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    """``(features, labels, mask or None, how)``: the first ``batch`` items of the training set
    through its collate function when they make a valid batch, else random features (seeded)."""
    from torch.utils.data import DataLoader, Subset

    n_cls = len(target.classnames)
    if target.dataset is not None and len(target.dataset):
        fn, how = collate_for(target, target.dataset)
        try:
            loader = DataLoader(Subset(target.dataset, list(range(min(batch, len(target.dataset))))), batch_size=batch,
                                collate_fn=fn)
            features, labels, meta = next(iter(loader))
            mask = meta.get("mask") if isinstance(meta, dict) else None
            if (isinstance(features, torch.Tensor) and features.dim() == 3 and isinstance(labels, torch.Tensor)
                    and labels.dtype == torch.long and bool(((labels >= 0) & (labels < n_cls)).all())):
                return features, labels, mask, f"the first {len(labels)} training videos ({how})"
        except Exception:  # noqa: BLE001: dataset-unpacking reports what is wrong with the data
            pass
        x, y = sample_batch(target, batch=batch)
        return x, y, None, "random features: the training set gives no valid batch (see dataset-unpacking)"
    x, y = sample_batch(target, batch=batch)
    return x, y, None, f"random features [{batch}, 8, D] (the target has no dataset)"
