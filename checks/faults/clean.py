"""The unbroken case every planted fault starts from: a VideoFeatureCLIP on the tiny
random-weight CLIP and fixed class names, its context drawn from a fixed seed."""
from __future__ import annotations

import functools
import inspect
import warnings

import torch

from videocoop.clip import TINY_MODEL, load_clip
from videocoop.model import VideoFeatureCLIP

from ..core import AuditTarget

#: Frames per video in the faults' in-memory data.
FRAMES = 4
SEED = 0


def seeded(make, *args, **kwargs):
    """``make(*args, **kwargs)`` with its random init (the context) drawn from SEED and the
    caller's RNG left as it was: a factory gives one model whatever ran before it, so the
    audits' verdicts (eot-collapse's spread hangs on the context drawn) never change by chance."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(SEED)
        return make(*args, **kwargs)


def clean(clip, tok, names, **kwargs) -> AuditTarget:
    model = seeded(VideoFeatureCLIP, names, clip, tok, n_ctx=4, **kwargs)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def with_encoder(clip, tok, names, encoder_cls, **kwargs) -> AuditTarget:
    """The clean model with another text encoder. An encoder whose ``pool_states`` takes no shared
    prefix is written for the plain path, so it runs the plain path on every device."""
    target = clean(clip, tok, names, **kwargs)
    te = target.model.text_encoder
    plain = "prefix" not in inspect.signature(encoder_cls.pool_states).parameters
    target.model.text_encoder = encoder_cls(clip, pool=te.pool, eot_token_id=te.eot_token_id,
                                            shared_prefix="off" if plain else "auto").requires_grad_(False)
    return target


NAMES = ["ApplyEyeMakeup", "jump", "brush_hair", "PlayingCello", "ride_bike"]


@functools.lru_cache(maxsize=1)
def tiny_clip():
    """The tiny random-weight CLIP (seed 0) and its tokenizer, loaded once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=0)
