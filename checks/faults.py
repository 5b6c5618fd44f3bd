"""Planted faults: each breaks a clean VideoFeatureCLIP the way a real CoOp port does.

Part of the product, not only of the tests: ``python -m checks --selftest`` runs every
audit on the clean model and on its planted fault (:data:`PLANTED`) on the machine at hand,
and the test suite and the pytest plugin import them from here.

Every factory takes ``(clip_model, tokenizer, classnames)`` and returns an
:class:`~checks.AuditTarget`; ``clean`` is the unbroken model, ``with_data`` the unbroken
model with a dataset. Factories never modify the CLIP model they are given (a fault that
needs another CLIP makes its own copy).
"""
from __future__ import annotations

import atexit
import copy
import dataclasses
import functools
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD
from torch import nn
from torch.utils.data import Dataset

from videocoop.clip import TINY_MODEL, embed_dim, load_clip
from videocoop.data import FeatureDataset
from videocoop.video import ExtractConfig, Extractor, extract
from videocoop.model import VideoFeatureCLIP, masked_mean
from videocoop.model import eot_positions
from videocoop.model import TextEncoder
from videocoop.video import Preprocess, Sampling

from .core import AuditTarget, Status

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


def _with_encoder(clip, tok, names, encoder_cls, **kwargs) -> AuditTarget:
    target = clean(clip, tok, names, **kwargs)
    te = target.model.text_encoder
    target.model.text_encoder = encoder_cls(clip, pool=te.pool, eot_token_id=te.eot_token_id).requires_grad_(False)
    return target


# --- device faults ---------------------------------------------------------------------

def plain_tokenized_prompts(clip, tok, names) -> AuditTarget:
    """CoOp's original: ``self.tokenized_prompts = tokens``, a plain attribute."""
    target = clean(clip, tok, names)
    pl = target.model.prompt_learner
    tokens = pl._buffers.pop("tokenized_prompts")
    pl.tokenized_prompts = tokens  # not a buffer any more: .to(device) leaves it behind
    return target


class CpuEotEncoder(TextEncoder):
    """Takes the EOT index on the CPU (``.cpu()`` in the encoder)."""

    def pool_states(self, x, eot):
        return super().pool_states(x, eot.cpu())


def eot_index_on_cpu(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, CpuEotEncoder)


class ListEotEncoder(TextEncoder):
    """Keeps the EOT positions as a Python list made at construction; the forward indexes
    the device states with ``torch.tensor(list)``, a CPU tensor."""

    eots: list[int] = []

    def pool_states(self, x, eot, prefix=None):
        return super().pool_states(x, torch.tensor(self.eots), prefix)


def eot_list_index(clip, tok, names) -> AuditTarget:
    target = _with_encoder(clip, tok, names, ListEotEncoder)
    te, pl = target.model.text_encoder, target.model.prompt_learner
    te.shared_prefix = "off"  # the plain path, which pools with the given indices
    te.eots = eot_positions(pl.tokenized_prompts, te.eot_token_id).tolist()
    return target


class ArangeRowsEncoder(TextEncoder):
    """Builds the row index with ``torch.arange(n)``, no device: a CPU tensor."""

    def pool_states(self, x, eot, prefix=None):  # shared prefix off: x holds every position
        return self.ln_final(x[torch.arange(x.shape[0]), eot])  # [n_cls, width]


def arange_without_device(clip, tok, names) -> AuditTarget:
    target = _with_encoder(clip, tok, names, ArangeRowsEncoder)
    target.model.text_encoder.shared_prefix = "off"
    return target


class CpuBiasEncoder(TextEncoder):
    """Adds a bias made in the forward without a device: a CPU tensor in arithmetic with
    device states, which raises on CUDA."""

    def pool_states(self, x, eot, prefix=None):
        return super().pool_states(x, eot, prefix) + torch.zeros(x.shape[-1])


def cpu_bias(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, CpuBiasEncoder)


class ItemLoopEncoder(TextEncoder):
    """The seed's mean pooling: one class at a time, the EOT read back with ``.item()``."""

    def pool_states(self, x, eot):
        x = self.ln_final(x)
        return torch.stack([x[i, : eot[i].item() + 1].mean(0) for i in range(x.shape[0])])  # [n_cls, width]


def item_loop(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, ItemLoopEncoder, text_pool="mean")


class BoolMaskEncoder(TextEncoder):
    """Selects the EOT rows with a boolean mask: right numbers, but the output shape depends
    on the data, so CUDA waits for it (and meta cannot run it)."""

    def pool_states(self, x, eot):
        at_eot = torch.arange(x.shape[1], device=x.device)[None, :] == eot[:, None]  # [n_cls, L]
        return self.ln_final(x[at_eot])  # [n_cls, width]


def bool_mask_pooling(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, BoolMaskEncoder)


# --- text-path faults ------------------------------------------------------------------

class PermuteNoMaskEncoder(TextEncoder):
    """CoOp's ``permute(1, 0, 2)`` kept on open_clip's batch-first transformer; the mask
    dropped to silence the resulting shape error."""

    def forward(self, prompts, tokenized_prompts):
        x = (prompts + self.positional_embedding[: prompts.shape[1]]).to(self.dtype)
        x = x.permute(1, 0, 2)  # [L, n_cls, width]: open_clip reads it as batch L, sequence n_cls
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.project(self.ln_final(x[rows, tokenized_prompts.argmax(-1)])).float()


def permute_no_mask(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, PermuteNoMaskEncoder)


class NoMaskEncoder(TextEncoder):
    """The transformer run without CLIP's causal mask."""

    def forward(self, prompts, tokenized_prompts):
        x = self.transformer((prompts + self.positional_embedding[: prompts.shape[1]]).to(self.dtype))  # no attn_mask
        rows = torch.arange(x.shape[0], device=x.device)
        return self.project(self.ln_final(x[rows, tokenized_prompts.argmax(-1)])).float()


def no_causal_mask(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, NoMaskEncoder)


class LastPositionEncoder(TextEncoder):
    """Pools the last position instead of the EOT."""

    def pool_states(self, x, eot):
        return self.ln_final(x[:, -1])


def last_position(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, LastPositionEncoder)


class WrongEotIdEncoder(TextEncoder):
    """Looks the EOT up by an id the prompts never contain: argmax of an all-false mask is 0,
    so every class pools its SOS token."""

    def pool_states(self, x, eot):
        return super().pool_states(x, torch.zeros_like(eot))


def sos_pooling(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, WrongEotIdEncoder)


class FullContextEncoder(TextEncoder):
    """CoOp's ``prompts + self.positional_embedding``: all 77 positions, so the model's own
    (truncated) prompts do not fit: every encode raises."""

    def forward(self, prompts, tokenized_prompts):
        x = self.transformer(prompts + self.positional_embedding, attn_mask=self.attn_mask)  # [n_cls, 77, width]
        return self.project(self.pool_states(x, eot_positions(tokenized_prompts, self.eot_token_id))).float()


def full_context_positions(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, FullContextEncoder)


class FixedLengthEncoder(TextEncoder):
    """Correct for the model's own prompt length, which it fixes: longer probe prompts do not fit."""

    length = 0

    def forward(self, prompts, tokenized_prompts):
        n = self.length
        x = self.transformer(prompts + self.positional_embedding[:n], attn_mask=self.attn_mask[:n, :n])  # [n_cls, n, w]
        return self.project(self.pool_states(x, eot_positions(tokenized_prompts, self.eot_token_id))).float()


def fixed_prompt_length(clip, tok, names) -> AuditTarget:
    """Names of one token each: every prompt ends at its EOT, so causal-mask must lengthen them."""
    target = _with_encoder(clip, tok, ["jump", "walk", "swim"], FixedLengthEncoder)
    target.model.text_encoder.length = target.model.prompt_learner.tokenized_prompts.shape[1]
    return target


class CpuCudaOnlyEncoder(TextEncoder):
    """Refuses any device but cpu and cuda: the meta forward stops before the text path is watched."""

    def forward(self, prompts, tokenized_prompts, **kwargs):
        if prompts.device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"unsupported device {prompts.device.type}")
        return super().forward(prompts, tokenized_prompts, **kwargs)


def meta_refused(clip, tok, names) -> AuditTarget:
    return _with_encoder(clip, tok, names, CpuCudaOnlyEncoder)


class PrefixOnlySharedEncoder(TextEncoder):
    """A broken fast path: the shared-prefix branch (what model.encode_text runs on the CPU)
    pools only the shared prefix, so every class gets one feature; the plain CoOp call stays right."""

    def pool_states(self, x, eot, prefix=None):
        if prefix is not None:
            return self.ln_final(prefix[-1]).expand(x.shape[0], -1)
        return super().pool_states(x, eot)


class SharedPathCpuCopy(TextEncoder):
    """Right on the plain path; the shared-prefix path sends the prefix states through the CPU."""

    def pool_states(self, x, eot, prefix=None):
        if prefix is not None:
            prefix = prefix.cpu().to(x.device)  # a copy to the host and back, on that path only
        return super().pool_states(x, eot, prefix)


def shared_path_cpu_copy(clip, tok, names) -> AuditTarget:
    """A device bug on the shared-prefix path only (shared_prefix 'auto': the path each device
    takes decides whether it bites there)."""
    return _with_encoder(clip, tok, names, SharedPathCpuCopy)


def shared_path_prefix_only(clip, tok, names) -> AuditTarget:
    target = _with_encoder(clip, tok, names, PrefixOnlySharedEncoder)
    target.model.text_encoder.shared_prefix = "split"  # the fast path on any device
    return target


def truncated_prompts(clip, tok, names) -> AuditTarget:
    """The ids a port with 72 context tokens gets from the tokenizer's silent truncation."""
    target = clean(clip, tok, names, truncate=False)  # all 77 positions, as such a port runs
    pl = target.model.prompt_learner
    pl.tokenized_prompts = tok([" ".join(["X"] * 72) + f" {w}." for w in pl.class_words])  # [n_cls, 77]
    return target


def cut_without_causal_mask(clip, tok, names) -> AuditTarget:
    """Prompts cut to max(EOT) + 1 on a text tower built without a causal mask (pass such a CLIP):
    exact under the mask, wrong here, where the EOT attends to the padding that was dropped."""
    target = clean(clip, tok, names)
    pl = target.model.prompt_learner
    n = max(pl.eots) + 1
    pl.tokenized_prompts = pl.tokenized_prompts[:, :n]  # [n_cls, n]
    pl.token_suffix = pl.token_suffix[:, : n - 1 - pl.n_ctx]
    return target


def coop_front_ids(clip, tok, names) -> AuditTarget:
    """Clean, as a faithful CoOp port is: class at the front in the embeddings, ids tokenized as
    ``"X X X X name."`` (CoOp tokenizes the end layout whatever the position)."""
    target = clean(clip, tok, names, class_token_position="front")
    pl = target.model.prompt_learner
    pl.tokenized_prompts = clean(clip, tok, names).model.prompt_learner.tokenized_prompts  # end-layout ids
    return target


def position_ignored(clip, tok, names) -> AuditTarget:
    """The layout says front, but the forward builds the end layout (the rearrangement skipped)."""
    target = clean(clip, tok, names)
    target.model.prompt_learner.class_token_position = "front"
    return target


# --- training faults -------------------------------------------------------------------

def clip_trainable(clip, tok, names) -> AuditTarget:
    """CLIP's text tower left trainable."""
    target = clean(clip, tok, names)
    target.model.text_encoder.requires_grad_(True)
    return target


def own_clip_copy_trainable(clip, tok, names) -> AuditTarget:
    """The model holds its own copy of CLIP (a port calling clip.load inside the model), left trainable."""
    model = seeded(VideoFeatureCLIP, names, copy.deepcopy(clip), tok, n_ctx=4)
    model.text_encoder.requires_grad_(True)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class ContextOnlyCheckpoint(VideoFeatureCLIP):
    """Saves the context and forgets the temporal module."""

    def trainable_state_dict(self):
        return {k: v for k, v in super().trainable_state_dict().items() if k.startswith("prompt_learner.")}


def checkpoint_misses_temporal(clip, tok, names) -> AuditTarget:
    model = seeded(ContextOnlyCheckpoint, names, clip, tok, n_ctx=4, temporal_agg="transformer")
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class BatchNormVideo(VideoFeatureCLIP):
    """A learned BatchNorm on the video feature: its running statistics are buffers, which
    ``trainable_state_dict`` (parameters only) does not save."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bn = torch.nn.BatchNorm1d(self.embed_dim)

    def encode_video(self, features, mask=None):
        return torch.nn.functional.normalize(self.bn(super().encode_video(features, mask)), dim=-1)  # [B, E]


def checkpoint_misses_buffers(clip, tok, names) -> AuditTarget:
    """Trained a few steps (the running statistics moved); the factory is known, as with --target."""
    def build():
        return seeded(BatchNormVideo, names, clip, tok, n_ctx=4)

    model = build().train()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        model(torch.randn(8, FRAMES, model.embed_dim, generator=g) + 3.0)  # running stats move
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0", rebuild=build)


def nothing_trainable(clip, tok, names) -> AuditTarget:
    """Every parameter frozen: the checkpoint is empty."""
    target = clean(clip, tok, names)
    target.model.requires_grad_(False)
    return target


# --- precision faults ------------------------------------------------------------------

class HalfTextPort(VideoFeatureCLIP):
    """CoOp's fp16 port: its text features come out in CLIP's half precision (CoOp's text
    encoder returns ``x.type(self.dtype)``) and meet the float32 video features read from
    disk without a cast, so the forward raises a dtype mismatch on its own data."""

    def encode_text(self, classes=None):
        return super().encode_text(classes).half()  # [n_cls, E] fp16


def fp16_text_float_features(clip, tok, names) -> AuditTarget:
    """A model that raises on its own data: every audit that runs it must FAIL naming the
    model's exception, the frame in its code and the fix, never ERROR ("the audit crashed")."""
    model = seeded(HalfTextPort, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def fp16_context_adam(clip, tok, names) -> AuditTarget:
    """CoOp's fp16 recipe (16 context vectors, kept in half precision) trained with Adam at CoOp's
    lr: small squared gradients underflow and Adam's eps (1e-8) is 0 in fp16, so the first step
    divides by zero (inf) and the next loss is NaN."""
    model = seeded(VideoFeatureCLIP, names, clip, tok, n_ctx=16)
    pl = model.prompt_learner
    pl.ctx = nn.Parameter(pl.ctx.detach().half())  # [n_ctx, width] fp16
    target = AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")
    target.make_optimizer = lambda m: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    return target


def fp16_context_sgd(clip, tok, names) -> AuditTarget:
    """The fp16 context with CoOp's own SGD: finite here, but its updates round away in fp16."""
    target = fp16_context_adam(clip, tok, names)
    target.make_optimizer = lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=2e-3,
                                                      momentum=0.9)
    return target


# --- video faults ----------------------------------------------------------------------

class MaskIgnored(VideoFeatureCLIP):
    """Takes the padding mask and drops it: the temporal aggregation counts zero frames."""

    def encode_video(self, features, mask=None):
        return super().encode_video(features, None)  # [B, E]


def padding_mask_ignored(clip, tok, names) -> AuditTarget:
    """The mask dropped before a plain mean: harmless here (the mean of a zero-padded video is the
    real mean rescaled, and the model L2-normalises it), so temporal-padding must pass it."""
    model = seeded(MaskIgnored, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def transformer_mask_ignored(clip, tok, names) -> AuditTarget:
    """A trained temporal transformer run without its key padding mask: real frames attend to the zeros."""
    def build():
        model = MaskIgnored(names, clip, tok, n_ctx=4, temporal_agg="transformer")
        torch.nn.init.normal_(model.temporal.out.weight, std=0.1)  # trained: no longer the identity
        return model

    return AuditTarget(seeded(build), names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def max_over_padding(clip, tok, names) -> AuditTarget:
    """A max over frames that never masks the zero frames of padded videos."""
    model = seeded(MaskIgnored, names, clip, tok, n_ctx=4, temporal_agg="max")
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class NoMaskArgument(VideoFeatureCLIP):
    """A forward without a mask (the seed's ``model(features)``): padded videos are averaged with their zeros."""

    def forward(self, features):
        return super().forward(features)


def no_mask_argument(clip, tok, names) -> AuditTarget:
    """A max over frames in a forward that takes no mask: padded videos are maxed with their zeros."""
    model = seeded(NoMaskArgument, names, clip, tok, n_ctx=4, temporal_agg="max")
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class BatchCentred(VideoFeatureCLIP):
    """Centres the video features on their batch mean ("normalising" over dim 0): each video's
    logits depend on the other videos of its batch."""

    def encode_video(self, features, mask=None):
        v = super().encode_video(features, mask)  # [B, E]
        return F.normalize(v - v.mean(dim=0, keepdim=True), dim=-1)


def batch_mean_centring(clip, tok, names) -> AuditTarget:
    model = seeded(BatchCentred, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def batchnorm_video(clip, tok, names) -> AuditTarget:
    """A BatchNorm on the video features: batch statistics in training mode."""
    model = seeded(BatchNormVideo, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class UnnormalisedVideo(VideoFeatureCLIP):
    """Averages the raw frame features and never normalises the result."""

    def encode_video(self, features, mask=None):
        return masked_mean(features.float(), mask)  # [B, E], norm ~ that of a CLIP feature


def unnormalised_video(clip, tok, names) -> AuditTarget:
    model = seeded(UnnormalisedVideo, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def scale_exponentiated_twice(clip, tok, names) -> AuditTarget:
    """Stores ``clip_model.logit_scale.exp()`` (100) where the forward applies exp again."""
    target = clean(clip, tok, names)
    target.model.logit_scale = clip.logit_scale.detach().float().exp()  # the buffer now holds 100
    return target


class ScaleWithoutExp(VideoFeatureCLIP):
    """Multiplies by the stored log-scale (4.6), not its exp (100)."""

    def logits(self, video, text):
        return self.logit_scale * video @ text.t()  # [B, n_cls]


def scale_without_exp(clip, tok, names) -> AuditTarget:
    model = seeded(ScaleWithoutExp, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def logit_scale_trainable(clip, tok, names) -> AuditTarget:
    """CLIP's logit_scale copied as a trainable parameter (no model.trains_logit_scale)."""
    target = clean(clip, tok, names)
    model = target.model
    del model._buffers["logit_scale"]
    model.logit_scale = nn.Parameter(clip.logit_scale.detach().float().clone())
    return target


# --- data faults -----------------------------------------------------------------------

class Sample(NamedTuple):
    """An item with VideoSample's fields (what videocoop.data.collate_samples reads)."""

    features: torch.Tensor
    label: int
    meta: dict


class Features(Dataset):
    """In-memory frame features; ``fields`` 3 gives (features, label, meta), 2 drops meta.

    With ``classnames`` the dataset lists them (``.classnames``, as FeatureDataset does), labels
    index that list and each item's meta path lies in its class's folder."""

    def __init__(self, n_cls, dim, per_class=2, label_offset=0, fields=3, info=None, classnames=None, lengths=(FRAMES,)):
        g = torch.Generator().manual_seed(0)
        n = len(classnames) if classnames is not None else n_cls
        self.items = [(torch.randn(lengths[(c * per_class + v) % len(lengths)], dim, generator=g), c + label_offset)
                      for c in range(n) for v in range(per_class)]
        self.fields, self.info, self.dim = fields, info, dim
        if classnames is not None:
            self.classnames = list(classnames)

    def __len__(self):
        return len(self.items)

    @property
    def labels(self):
        return [label for _, label in self.items]

    def __getitem__(self, i):
        features, label = self.items[i]
        if self.fields == 2:
            return features, label
        names = getattr(self, "classnames", None)
        path = f"{names[label]}/v{i}.npy" if names and 0 <= label < len(names) else f"v{i}.npy"
        return Sample(features, label, {"video_id": f"v{i}", "path": path, "num_frames": FRAMES})


def info_for(clip, clip_name=TINY_MODEL, weights="random:0") -> dict:
    return {"clip_model": clip_name, "weights": weights, "num_frames": FRAMES, "dim": embed_dim(clip)}


def with_data(clip, tok, names, **kwargs) -> AuditTarget:
    """The clean model with a training split (``kwargs`` go to it) and a validation split, both
    listing the classes in the prompts' order."""
    target = clean(clip, tok, names)
    kwargs.setdefault("info", info_for(clip))
    kwargs.setdefault("classnames", names)
    target.dataset = Features(len(names), embed_dim(clip), **kwargs)
    target.val_dataset = Features(len(names), embed_dim(clip), per_class=1, info=info_for(clip), classnames=names)
    return target


def two_field_items(clip, tok, names) -> AuditTarget:
    """A dataset yielding (features, label)."""
    return with_data(clip, tok, names, fields=2)


def variable_length_tuples(clip, tok, names) -> AuditTarget:
    """Videos of 2 to 5 frames as plain (features, label, meta) tuples, and no collate_fn: the
    DataLoader's default collate cannot stack them."""
    return with_data(clip, tok, names, lengths=(2, 3, 4, 5))


def labels_from_one(clip, tok, names) -> AuditTarget:
    return with_data(clip, tok, names, label_offset=1, classnames=None)


def val_split_lacks_a_class(clip, tok, names) -> AuditTarget:
    """A validation folder without videos of one class, read without training's class list:
    its sorted folders number the classes after the missing one one lower (labels shift)."""
    target = with_data(clip, tok, names)
    kept = [c for i, c in enumerate(names) if i != 1]
    target.val_dataset = Features(len(kept), embed_dim(clip), per_class=1, info=info_for(clip), classnames=kept)
    return target


def checkpoint_other_classes(clip, tok, names) -> AuditTarget:
    """Resuming from a checkpoint that was trained on the same names in another order."""
    target = with_data(clip, tok, names)
    target.checkpoint = {"classnames": list(names[1:]) + list(names[:1]), "trainable": {}}
    return target


def features_from_other_clip(clip, tok, names) -> AuditTarget:
    """features.json names another CLIP than the model's."""
    return with_data(clip, tok, names, info=info_for(clip, clip_name="ViT-B-16", weights="openai"))


# --- zero-argument factories for `python -m checks --target checks.faults:NAME` ----------

NAMES = ["ApplyEyeMakeup", "jump", "brush_hair", "PlayingCello", "ride_bike"]


@functools.lru_cache(maxsize=1)
def tiny_clip():
    """The tiny random-weight CLIP (seed 0) and its tokenizer, loaded once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=0)


def clean_target() -> AuditTarget:
    return with_data(*tiny_clip(), NAMES)


def bare_model():
    return clean(*tiny_clip(), NAMES).model


def bare_model_without_classnames():
    """A bare model carrying no class names (CoOp's PromptLearner keeps none)."""
    model = clean(*tiny_clip(), NAMES).model
    del model.prompt_learner.classnames
    return model


def plain_attribute_target() -> AuditTarget:
    return plain_tokenized_prompts(*tiny_clip(), NAMES)


def item_loop_target() -> AuditTarget:
    return item_loop(*tiny_clip(), NAMES)


def broken_factory():
    """A --target factory that fails while building."""
    raise RuntimeError("checkpoint file not found: ckpt.pt")


# --- extraction faults: extractors that go wrong the way hand-written ones do ------------
# Each factory extracts the same few tiny videos with the tiny CLIP and one part swapped,
# and returns the audit target over the written feature folder (extraction-parity).


EXTRACT_FRAMES = 3


class BGRPreprocess(Preprocess):
    """OpenCV's channel order: the frames reach CLIP as BGR."""

    def resize_crop(self, frames, two_pass=None):
        return super().resize_crop(frames.flip(-1), two_pass)


class DevicePathPreprocess(Preprocess):
    """Honest: the resize GPUs run (two float passes, rounded between), here on the CPU."""

    def resize_crop(self, frames, two_pass=None):
        return super().resize_crop(frames, two_pass=True)


@dataclasses.dataclass(frozen=True)
class NextFrameSampling(Sampling):
    """Takes the frame after each segment middle while features.json names segment middles."""

    def indices(self, times):
        return [min(i + 1, len(times) - 1) for i in super().indices(times)]


def imagenet_stats(pre: Preprocess) -> Preprocess:
    return dataclasses.replace(pre, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD))


def stretched(pre: Preprocess) -> Preprocess:
    """Resize straight to the square input: the picture is squashed, nothing cropped."""
    return dataclasses.replace(pre, resize_mode="squash")


def bgr(pre: Preprocess) -> Preprocess:
    return BGRPreprocess(**{f.name: getattr(pre, f.name) for f in dataclasses.fields(pre)})


def _scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=4)
def fault_videos(width: int = 64, height: int = 48, frames: int = 7, per_class: int = 1) -> Path:
    """Two classes of tiny synthetic videos (seeded), written once per session."""
    from videocoop.video import synthesize_videos

    root = _scratch("videocoop-videos-")
    synthesize_videos(root, n_classes=2, train_per_class=per_class, val_per_class=0, frames=frames, width=width,
                      height=height)
    return root / "train"


def extracted(clip, tok, names=None, *, preprocess=None, sampling=None, tower=None, videos=None,
              precision="fp32", dtype="float16", clip_name=TINY_MODEL, weights="random:0") -> AuditTarget:
    """Extract ``videos`` (default :func:`fault_videos`) with ``clip``'s parts, one swapped, and
    return the target over the feature folder. ``tower`` encodes instead of ``clip`` while
    features.json still names ``clip`` (another tower's features)."""
    base = Preprocess.from_model(clip)
    extractor = Extractor(tower or clip, clip_name, weights, sampling or Sampling(EXTRACT_FRAMES),
                          preprocess(base) if callable(preprocess) else (preprocess or base),
                          torch.device("cpu"), precision, batch_size=64, num_workers=0)
    out = _scratch("videocoop-features-")
    videos = videos or fault_videos()
    extract(ExtractConfig(videos=str(videos), out=str(out), clip_model=clip_name, dtype=dtype, progress="none",
                          num_workers=0), extractor)
    ds = FeatureDataset(out)
    model = VideoFeatureCLIP(ds.classnames, clip, tok, n_ctx=4)
    return AuditTarget(model, ds.classnames, clip, tok, dataset=ds, clip_name=clip_name, weights=weights)


def extraction_clean(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok)


def bgr_frames(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, preprocess=bgr)


def imagenet_normalised(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, preprocess=imagenet_stats)


def stretched_resize(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, preprocess=stretched)


def next_frames(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, sampling=NextFrameSampling(EXTRACT_FRAMES))


@functools.lru_cache(maxsize=1)
def _other_tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=1)[0]


def other_tower(clip, tok, names=None) -> AuditTarget:
    """Features of the tiny architecture with other weights (seed 1), labelled as seed 0's."""
    return extracted(clip, tok, tower=_other_tiny())


# --- what each audit must catch ----------------------------------------------------------

class Planted(NamedTuple):
    """A planted fault and what its audit must conclude: ``status``, with ``words`` in the finding."""

    make: Callable[..., AuditTarget]
    status: Status
    words: str


#: Every audit's planted fault (``python -m checks --selftest`` and the tests run each one).
PLANTED: dict[str, Planted] = {
    "buffer-device-sync": Planted(plain_tokenized_prompts, Status.FAIL, "plain tensor attribute"),
    "index-device-consistency": Planted(eot_index_on_cpu, Status.FAIL, "copies a tensor to the CPU"),
    "eot-collapse": Planted(sos_pooling, Status.FAIL, "classes indistinguishable"),
    "dataset-unpacking": Planted(two_field_items, Status.FAIL, "`features, label, meta = item` raises"),
    "text-encoder-parity": Planted(permute_no_mask, Status.FAIL, "differs from encode_text"),
    "causal-mask": Planted(no_causal_mask, Status.FAIL, "changed the pooled feature"),
    "batch-independence": Planted(permute_no_mask, Status.FAIL, "classes mix inside attention"),
    "gradient-flow": Planted(clip_trainable, Status.FAIL, "CLIP tensor(s) are trainable"),
    "prompt-tokenization": Planted(truncated_prompts, Status.FAIL, "not all in the prompt"),
    "host-sync": Planted(item_loop, Status.WARN, "Tensor.item()"),
    "checkpoint-roundtrip": Planted(checkpoint_misses_temporal, Status.FAIL, "strict load refused"),
    "feature-model-match": Planted(features_from_other_clip, Status.FAIL, "clip_model='ViT-B-16'"),
    "temporal-padding": Planted(max_over_padding, Status.FAIL, "the temporal aggregation counts the padding"),
    "video-batch-independence": Planted(batch_mean_centring, Status.FAIL, "the video path mixes videos"),
    "class-order": Planted(val_split_lacks_a_class, Status.FAIL, "labels shift by 1"),
    "logit-scale": Planted(unnormalised_video, Status.FAIL, "not L2-normalised"),
    "optimizer-step": Planted(fp16_context_adam, Status.FAIL, "turned prompt_learner.ctx inf"),
    "extraction-parity": Planted(bgr_frames, Status.FAIL, "stored features differ from CLIP's"),
}

#: Audits whose clean case needs a target of its own (the default clean model's data names no
#: source videos, so extraction-parity has nothing to compare there: SKIP).
CLEAN: dict[str, Callable[..., AuditTarget]] = {"extraction-parity": extraction_clean}

#: The runner's own planted fault: a model that raises on its own data is a FAIL naming its
#: exception (``(audit it runs under, fault)``), never an ERROR.
RUNNER_FAULT = ("logit-scale", Planted(fp16_text_float_features, Status.FAIL, "the model raised RuntimeError"))
