"""KgCoOp (``htyao89/KgCoOp``, ``trainers/kgcoop.py``) on videos: CoOp plus a loss keeping the learned
class features near CLIP's features of a hand-written template; the forward returns
``(logits, score)`` and the trainer adds ``w * score`` to the cross-entropy.

Like upstream, the learner also holds a meta-net that nothing uses and that does not train, and the
optimiser is built over the whole learner (``build_optimizer(self.model.prompt_learner)``): it holds
frozen tensors that never move (a WARN of gradient-flow, not a FAIL).

Planted, as KgCoOp has it: the template's features kept as a plain attribute
(``self.text_features = ...``), which ``.to()`` leaves on the CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import CoOpVideo, videos
from .target import make_target

#: KgCoOp's UCF101 template and its weight of the knowledge loss (cfg.TRAINER.COOP.W).
TEMPLATE = "a photo of a person doing {}."
W = 8.0


class KgCoOpVideo(CoOpVideo):
    def __init__(self, clip, tok, names, **kwargs):
        super().__init__(clip, tok, names, **kwargs)
        with torch.no_grad():
            hand = clip.encode_text(tok([TEMPLATE.format(n.replace("_", " ")) for n in names]))  # [n_cls, E]
        self.keep(F.normalize(hand, dim=-1))
        dim = embed_dim(clip)
        self.prompt_learner.meta_net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True)).requires_grad_(False)

    def keep(self, features: torch.Tensor) -> None:
        self.register_buffer("text_features_old", features)

    def forward(self, features, mask=None):
        text = self.encode_text()  # [n_cls, E]
        logits = self.logit_scale.exp() * self.encode_video(features, mask) @ text.t()
        score = 1.0 - F.cosine_similarity(text, self.text_features_old, dim=1, eps=1e-7).mean()
        return logits, score


class PlainTemplateFeatures(KgCoOpVideo):
    """KgCoOp's ``self.text_features = text_features``: not a buffer."""

    def keep(self, features):
        self.text_features_old = features


def _loss(m, x, y, mask):
    logits, score = m(x, mask)
    return F.cross_entropy(logits, y) + W * score


def _target(cls, clip, tok, names):
    return make_target(seeded(cls, clip, tok, names), names, clip, tok, videos(clip, names),
                       description="KgCoOp: CoOp + a loss towards the hand-written template's features; "
                                   "forward -> (logits, score)",
                       logits=lambda m, x, mask: m(x, mask)[0], loss=_loss,
                       make_optimizer=lambda m: torch.optim.SGD(m.prompt_learner.parameters(), lr=2e-3))


def kgcoop(clip, tok, names):
    return _target(KgCoOpVideo, clip, tok, names)


def kgcoop_plain_template(clip, tok, names):
    return _target(PlainTemplateFeatures, clip, tok, names)
