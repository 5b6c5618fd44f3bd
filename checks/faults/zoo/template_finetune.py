"""Fine-tuning CLIP's text tower on a drawn template, in the ActionCLIP style (``sallymmx/ActionCLIP``,
``train.py``): at every training step each class is written into one template drawn at random (the draw
kept in a buffer), CLIP's text tower and its temperature ``exp(logit_scale)`` train; evaluation scores
every template and averages their probabilities. The target declares its own training step: the loop
step the user runs, with its precision handling.

Planted, as upstream has them: the weights kept in fp16 and converted to fp32 only for
``optimizer.step()`` and back (no fp32 master weights: most of a small learning rate's updates round
away), and evaluation at a fixed temperature (upstream's ``100.0 *``, CLIP's scale when loaded) while
training applies the trained ``exp(logit_scale)``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..clean import seeded
from .common import IdsTextTower, masked_mean, videos
from .ensemble import TEMPLATES, template_ids
from .target import make_target


class DrawnTemplateVideo(nn.Module):
    def __init__(self, clip, tok, names):
        super().__init__()
        own = copy.deepcopy(clip)  # fine-tuned: a text tower of its own, the CLIP handed in untouched
        self.text = IdsTextTower(own).requires_grad_(True)  # trains
        self.logit_scale = nn.Parameter(clip.logit_scale.detach().clone())  # trains
        self.register_buffer("template_ids", template_ids(tok, names))  # [K, n_cls, 77]
        self.register_buffer("drawn", torch.zeros(len(names), dtype=torch.long))  # the last step's templates

    def set_classes(self, ids: torch.Tensor) -> None:
        self.template_ids = ids.to(self.template_ids.device)
        self.drawn = torch.zeros(ids.shape[1], dtype=torch.long, device=self.drawn.device)

    def encode_video(self, features, mask=None):
        x = F.normalize(features.float(), dim=-1).to(self.logit_scale.dtype)  # in fp32: a zero frame stays 0, not NaN
        return F.normalize(masked_mean(x, mask).float(), dim=-1).to(x.dtype)  # [B, E]

    def eval_scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def forward(self, features, mask=None):
        video = self.encode_video(features, mask)
        K, n, L = self.template_ids.shape
        if self.training:  # one template per class, drawn anew at every step
            self.drawn.copy_(torch.randint(K, (n,), device=self.drawn.device))
            ids = self.template_ids[self.drawn, torch.arange(n, device=self.drawn.device)]  # [n_cls, L]
            text = F.normalize(self.text.encode(ids), dim=-1)
            return self.logit_scale.exp() * video @ text.t()  # [B, n_cls] logits
        text = F.normalize(self.text.encode(self.template_ids.reshape(K * n, L)), dim=-1).view(K, n, -1)
        logits = self.eval_scale() * torch.einsum("be,kne->bkn", video, text)  # [B, K, n_cls]
        return logits.float().softmax(dim=-1).mean(dim=1)  # [B, n_cls] probabilities


class FixedEvalTemperature(DrawnTemplateVideo):
    """Evaluation at the temperature CLIP had when loaded (upstream's literal 100), training at the trained one."""

    def __init__(self, clip, tok, names):
        super().__init__(clip, tok, names)
        self.fixed = float(clip.logit_scale.exp())

    def eval_scale(self):
        return torch.tensor(self.fixed, dtype=self.logit_scale.dtype, device=self.logit_scale.device)


def loss(model, features, labels, mask):
    """The training objective: cross-entropy of the drawn templates' logits (training mode)."""
    return F.cross_entropy(model(features, mask).float(), labels)


def train_step(model, features, labels, mask, optimizer):
    """The user's loop step: zero the gradients, the loss, backward, step."""
    optimizer.zero_grad()
    value = loss(model, features, labels, mask)
    value.backward()
    optimizer.step()
    return value


def fp16_train_step(model, features, labels, mask, optimizer):
    """Upstream's step for fp16 weights: ``convert_models_to_fp32(model)``, ``optimizer.step()``,
    ``convert_weights(model)``: every update is rounded back to fp16, no fp32 copy keeps it."""
    optimizer.zero_grad()
    value = loss(model, features, labels, mask)
    value.backward()
    for p in model.parameters():
        p.data = p.data.float()
        if p.grad is not None:
            p.grad.data = p.grad.data.float()
    optimizer.step()
    model.half()
    return value


def adamw(model):
    """ActionCLIP's optimiser: AdamW, lr 5e-6, betas (0.9, 0.98), eps 1e-6, weight decay 0.2."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6, betas=(0.9, 0.98), eps=1e-6,
                             weight_decay=0.2)


def _target(cls, clip, tok, names, half: bool = False):
    model = seeded(cls, clip, tok, names)
    if half:
        model.half()
    return make_target(
        model, names, clip, tok, videos(clip, names),
        description=f"fine-tuning CLIP's text tower on one of {len(TEMPLATES)} templates drawn per class at each "
                    f"step (ActionCLIP); evaluation averages every template's probabilities"
                    + ("; fp16 weights" if half else ""),
        trainable_clip=("text.*", "logit_scale"), make_optimizer=adamw, loss=loss,
        train_step=fp16_train_step if half else train_step,
        prompts_per_class=len(TEMPLATES), combine="probabilities", output="probabilities",
        token_ids=lambda m: m.template_ids, encode_text=lambda m, prompts, ids: m.text(prompts, ids),
        for_classes=lambda m, classes: m.set_classes(template_ids(tok, classes)) or m,
    )


def template_finetune(clip, tok, names):
    return _target(DrawnTemplateVideo, clip, tok, names)


def template_finetune_fp16(clip, tok, names):
    return _target(DrawnTemplateVideo, clip, tok, names, half=True)


def template_finetune_fixed_eval_scale(clip, tok, names):
    return _target(FixedEvalTemperature, clip, tok, names)
