"""Faults in what training sees and repeats (determinism, learning-signal, optimizer-step): dropout left on in
evaluation, noise the seed does not fix, random validation crops; a logit scale applied again in the loss,
probabilities where logits are due, logits that never read the video, a schedule held at 0, a learning rate
of 0. Each is a correct model with one real mistake, the way ports and training scripts make it."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from videocoop.model import VideoFeatureCLIP

from ..core import AuditTarget
from .clean import seeded
from .data import with_data


def _target(cls, clip, tok, names, **kwargs) -> AuditTarget:
    target = with_data(clip, tok, names)
    target.model = seeded(cls, names, clip, tok, n_ctx=4)
    for key, value in kwargs.items():
        setattr(target, key, value)
    return target


# --- determinism -----------------------------------------------------------------------

class FunctionalDropout(VideoFeatureCLIP):
    """Dropout on the video feature through ``F.dropout(x, p)``, whose ``training`` defaults to True: it keeps
    dropping in eval mode (the module's ``self.training`` is never passed)."""

    def encode_video(self, features, mask=None):
        return F.normalize(F.dropout(super().encode_video(features, mask), 0.1), dim=-1)  # [B, E]


def eval_dropout(clip, tok, names) -> AuditTarget:
    return _target(FunctionalDropout, clip, tok, names)


class UnseededNoise(VideoFeatureCLIP):
    """Feature noise in training drawn from numpy's ``default_rng()``, seeded from the OS: a seeded run differs."""

    def encode_video(self, features, mask=None):
        if self.training:
            noise = np.random.default_rng().normal(0.0, 0.05, tuple(features.shape)).astype(np.float32)
            features = features + torch.from_numpy(noise).to(features.device)  # [B, T, D]
        return super().encode_video(features, mask)


def unseeded_training_noise(clip, tok, names) -> AuditTarget:
    return _target(UnseededNoise, clip, tok, names)


class RandomCrops(torch.utils.data.Dataset):
    """A validation split cropping a random run of frames on every read (a training transform left on)."""

    def __init__(self, inner, frames: int = 3):
        self.inner, self.frames = inner, frames
        self.classnames = inner.classnames

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        item = self.inner[i]
        start = int(torch.randint(0, item.features.shape[0] - self.frames + 1, ()))
        return item._replace(features=item.features[start:start + self.frames])  # [frames, D]


def random_val_crops(clip, tok, names) -> AuditTarget:
    target = with_data(clip, tok, names)
    target.val_dataset = RandomCrops(target.val_dataset)
    return target


# --- learning-signal ---------------------------------------------------------------------

def loss_scaled_twice(clip, tok, names) -> AuditTarget:
    """A training loss that multiplies the logits by exp(logit_scale) again (CLIP's ``logits_per_image`` code
    pasted beside a model that already scales them): the logits are right, the loss is not."""
    target = with_data(clip, tok, names)

    def loss(model, features, labels, mask):
        return F.cross_entropy(model.logit_scale.exp() * model(features, mask), labels)

    target.loss = loss
    return target


def loss_summed(clip, tok, names) -> AuditTarget:
    """A training loss summed over the batch (``reduction="sum"``): the update doubles when the batch does."""
    target = with_data(clip, tok, names)
    target.loss = lambda model, features, labels, mask: F.cross_entropy(model(features, mask), labels, reduction="sum")
    return target


class SoftmaxForward(VideoFeatureCLIP):
    """Returns ``logits.softmax(-1)``: cross-entropy then applies its own softmax to probabilities."""

    def forward(self, features, mask=None):
        return super().forward(features, mask).softmax(dim=-1)  # [B, n_cls] probabilities


def softmax_in_forward(clip, tok, names) -> AuditTarget:
    return _target(SoftmaxForward, clip, tok, names)


class VideoIgnored(VideoFeatureCLIP):
    """``logits(video, text)`` reads the wrong variable: the mean class text feature stands where the video
    feature belongs, so every video gets the same logits."""

    def logits(self, video, text):
        wrong = F.normalize(text.mean(dim=0, keepdim=True), dim=-1).expand_as(video)  # [B, E]: not the video
        return super().logits(wrong, text)


def video_ignored(clip, tok, names) -> AuditTarget:
    return _target(VideoIgnored, clip, tok, names)


def schedule_at_zero(clip, tok, names) -> AuditTarget:
    """A linear warm-up written with integer division over a warm-up counted in videos, not steps: the factor
    ``step // warmup`` stays 0 for the whole run."""
    warmup = 10 * 5000  # ten epochs of 5000 videos, where ten epochs of steps were meant

    def make_scheduler(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, step // warmup))

    return _target(VideoFeatureCLIP, clip, tok, names, make_scheduler=make_scheduler)


# --- optimizer-step --------------------------------------------------------------------

def sgd_lr_zero(clip, tok, names) -> AuditTarget:
    """SGD at lr 0 (a learning rate read from an unset config key): the steps change nothing."""
    return _target(VideoFeatureCLIP, clip, tok, names, make_optimizer=lambda m: torch.optim.SGD(
        [p for p in m.parameters() if p.requires_grad], lr=0.0, momentum=0.9))


__all__ = ["FunctionalDropout", "RandomCrops", "SoftmaxForward", "UnseededNoise", "VideoIgnored", "eval_dropout",
           "loss_scaled_twice", "loss_summed", "random_val_crops", "schedule_at_zero", "sgd_lr_zero", "softmax_in_forward",
           "unseeded_training_noise", "video_ignored"]
