"""The audited model, run and copied without being changed: deep copies (an fp32 one of CLIP's
text path), an eval forward that puts every module's mode and buffer back, and the class text
features the model's own forward computes."""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from . import contract
from .core import AuditTarget, Skip


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy, so audits that move or train the model leave the user's untouched."""
    try:
        return copy.deepcopy(model)
    except Exception as e:  # noqa: BLE001: the reason goes into the report
        raise Skip(f"the model cannot be deep-copied ({type(e).__name__}: {e}); this audit needs a copy to move or train") from e


def handed_over(target: AuditTarget) -> nn.Module:
    """The model as the target handed it over, before any audit ran it: a copy taken when the first audit
    starts (the runner asks for it before any preflight). The forwards the audits run on the model itself
    (the preflight's probe, say) may leave state behind, a cache the first forward fills; the device audits
    move a copy of this one, so what a forward leaves is judged by forward-state alone. The model itself
    when it cannot be deep-copied (the audits that need a copy say so)."""
    if "handed_over" not in target.cache:
        try:
            target.cache["handed_over"] = copy.deepcopy(target.model)
        except Exception:  # noqa: BLE001: copy_model reports it where a copy is needed
            target.cache["handed_over"] = target.model
    return target.cache["handed_over"]


def fp32_copy(clip: nn.Module) -> nn.Module:
    """An fp32 copy of CLIP's text path. The image tower is left out (deepcopy's memo maps it
    to None): encode_text never reads it, and it can be most of the model."""
    visual = getattr(clip, "visual", None)
    return copy.deepcopy(clip, memo={id(visual): None} if visual is not None else None).float()


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


@contextlib.contextmanager
def preserved_buffers(model: nn.Module):
    """Every buffer's value as it was (a training-mode forward moves a BatchNorm's running statistics)."""
    saved = [(b, b.detach().clone()) for b in model.buffers() if b.device.type != "meta"]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


class _Dtypes(TorchFunctionMode):
    """The floating dtypes the ops of a block produce."""

    def __init__(self):
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
                self.seen.add(t.dtype)
        return out


def computes_in(fn) -> torch.dtype:
    """The lowest precision any op of ``fn()`` produces: fp16 or bf16 when one does, else fp32 (the
    precision a model computes in, whatever the dtype of what it returns)."""
    watch = _Dtypes()
    with watch, torch.no_grad():
        fn()
    half = [d for d in (torch.float16, torch.bfloat16) if d in watch.seen]
    return half[0] if half else torch.float32


def run_model(target: AuditTarget, features: torch.Tensor, mask: torch.Tensor | None = None, model=None):
    """The target's logits for a batch in eval mode without gradients (``model``: a copy, else the
    audited model), every module's mode and buffer left as they were."""
    model = target.model if model is None else model
    with preserved_modes(model), preserved_buffers(model), torch.no_grad():
        return contract.logits(target, model.eval(), features, mask)


def forward_text_features(target: AuditTarget) -> torch.Tensor | None:
    """What ``text_encoder`` returns inside the model's own forward for the classes ``[n_cls, E]``: the
    path training takes (a model may pass the encoder more than the CoOp call, e.g. our shared-prefix
    layout); for prompts conditioned on each video, its call for the first video of the batch, which
    the text view is conditioned on too. None when the model has no ``text_encoder`` module, the
    forward fails or never calls it with the class prompts."""
    if "text_forward" not in target.cache:
        from .inputs import probe_batch
        from .text import prompts_and_tokens

        captured = []
        te = getattr(target.model, "text_encoder", None)
        shape = tuple(prompts_and_tokens(target)[0].shape)

        def keep(module, args, kwargs, out):
            prompts = args[0] if args else next(iter(kwargs.values()), None)
            if isinstance(out, torch.Tensor) and isinstance(prompts, torch.Tensor) and tuple(prompts.shape) == shape:
                captured.append(out.detach())

        if isinstance(te, nn.Module):
            handle = te.register_forward_hook(keep, with_kwargs=True)
            try:
                run_model(target, probe_batch(target, 2)[0])
            except Exception:  # noqa: BLE001: index-device-consistency and dataset-unpacking report it
                captured = []
            finally:
                handle.remove()
        target.cache["text_forward"] = captured[0].float() if captured else None
    return target.cache["text_forward"]


def text_features(target: AuditTarget) -> torch.Tensor:
    """The model's class text features ``[n_cls, E]`` (unnormalised) as its own forward computes
    them, else as the plain call :func:`~checks.text.plain_text_features` does."""
    from .text import plain_text_features

    forward = forward_text_features(target)
    plain = plain_text_features(target)
    return forward if forward is not None and forward.shape == plain.shape else plain
