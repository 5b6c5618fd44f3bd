"""The audited model, run and copied without being changed: deep copies (an fp32 one of CLIP's
text path), an eval forward that puts every module's mode back, the class text features the
model's own forward computes, the copy of it the video audits run, and which of its
parameters are CLIP's own."""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from .core import AuditTarget, Skip
from .inputs import sample_batch
from .text import plain_text_features, text_encoder


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy, so audits that move or train the model leave the user's untouched."""
    try:
        return copy.deepcopy(model)
    except Exception as e:  # noqa: BLE001: the reason goes into the report
        raise Skip(f"the model cannot be deep-copied ({type(e).__name__}: {e}); this audit needs a copy to move or train") from e


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


def text_features(target: AuditTarget) -> torch.Tensor:
    """The model's class text features ``[n_cls, E]`` (unnormalised) as its own forward
    computes them, else as the CoOp call :func:`plain_text_features` does."""
    forward = forward_text_features(target)
    plain = plain_text_features(target)
    return forward if forward is not None and forward.shape == plain.shape else plain


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
