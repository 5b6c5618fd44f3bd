"""Load a frozen open_clip model and its tokenizer, never downloading anything.

Weights come from one of three places, in this order of preference:

* ``checkpoint``: a local file (an open_clip or OpenAI state dict);
* ``pretrained``: an open_clip pretrained tag whose file is already in the user's cache;
* neither: random weights drawn from ``seed``, identical on every run and machine, so
  synthetic features made with them can be trained on later.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from pathlib import Path

import open_clip
import torch
from torch import nn

from ..utils.errors import VideoCoopError
from ..utils.seeding import check_seed

#: A tiny architecture (text width 32, 2 layers, the real CLIP BPE tokenizer, context 77)
#: for fast tests. Loadable by name like any open_clip model.
TINY_MODEL = "videocoop-tiny"
PRECISIONS = ("fp32", "fp16", "bf16", "amp")

open_clip.add_model_config(Path(__file__).parent / "model_configs")


class UntrainedModelWarning(UserWarning):
    """Random CLIP weights: fine for tests and synthetic data, meaningless on real videos.

    ``text(how)`` words the fix for the caller: Python argument names by default, the
    command line's flags when the CLI shows it.
    """

    def __init__(self, name: str, seed: int):
        self.name, self.seed = name, seed
        super().__init__(self.text("pretrained= or checkpoint="))

    def __reduce__(self):  # pickles (to a worker, say) with its own arguments, not the text
        return type(self), (self.name, self.seed)

    def text(self, how: str) -> str:
        return (f"CLIP {self.name} has random weights (seed {self.seed}): fine for tests and synthetic data, "
                f"meaningless on real video features. Pass {how} for real weights.")


class _OpenClipRandomInitFilter(logging.Filter):
    """Drops open_clip's "Model initialized randomly" warning: our UntrainedModelWarning says it,
    with the seed and the fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _offline():
    # open_clip reaches for the Hugging Face hub for some configs and tokenizers; we never
    # download, so make any such attempt fail fast instead of hanging on a closed network.
    # open_clip logs through the root logger: a filter on it for the length of the call drops
    # its one redundant line and nothing else (no level or disable state is touched). Its
    # module-level logging.warning() would also run logging.basicConfig() on a root without
    # handlers, configuring the caller's logging for good: a NullHandler stands in meanwhile.
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in old})
    root, quiet, stand_in = logging.getLogger(), _OpenClipRandomInitFilter(), logging.NullHandler()
    root.addFilter(quiet)
    root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeHandler(stand_in)
        root.removeFilter(quiet)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cached_pretrained_file(name: str, tag: str, cache_dir: str | None) -> tuple[str | None, list[str]]:
    """Where open_clip would have put the weights for ``name``/``tag``; never downloads.

    Returns the file when it exists, and the list of places looked at (for the error).
    """
    cfg = open_clip.get_pretrained_cfg(name, tag)
    looked: list[str] = []
    if "file" in cfg:
        looked.append(cfg["file"])
        if os.path.isfile(cfg["file"]):
            return cfg["file"], looked
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        if filename == "open_clip_pytorch_model.bin":
            candidates.insert(0, "open_clip_model.safetensors")
        for fn in candidates:
            looked.append(f"hf-hub cache: {repo_id}/{fn}")
            path = try_to_load_from_cache(repo_id, fn, cache_dir=cache_dir)
            if isinstance(path, str) and os.path.isfile(path):
                return path, looked
    url = cfg.get("url", "")
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        looked.append(path)
        if os.path.isfile(path):
            return path, looked
    return None, looked


def file_sha256(path: str | os.PathLike, length: int = 16) -> str:
    """Short content hash of a checkpoint, recorded in features.json as the weights' identity."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def weights_id(pretrained: str | None = None, checkpoint: str | os.PathLike | None = None, seed: int = 0) -> str:
    """The identity of a set of CLIP weights, as written to ``features.json``.

    A pretrained tag, ``sha256:<hash>`` of a checkpoint file, or ``random:<seed>``.
    """
    if checkpoint is not None:
        return f"sha256:{file_sha256(checkpoint)}"
    if pretrained:
        return pretrained
    return f"random:{seed}"


def _check_supported(name: str, precision: str) -> None:
    """Refuse an unknown model or precision, and towers open_clip takes from Hugging Face."""
    if name not in open_clip.list_models():
        raise VideoCoopError(
            f"unknown CLIP model {name!r}; available: {', '.join(open_clip.list_models())}"
        )
    if precision not in PRECISIONS:
        raise VideoCoopError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    # SigLIP, CLIPA, RoBERTa towers...: their tokenizer (and some text towers) come from the
    # transformers package and the Hugging Face hub; refuse them before building anything.
    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
    hf = {k: text_cfg[k] for k in ("hf_tokenizer_name", "hf_model_name") if text_cfg.get(k)}
    if hf:
        what = "tokenizer and text tower come" if "hf_model_name" in hf else "tokenizer comes"
        raise VideoCoopError(
            f"CLIP {name} is not supported: its {what} from Hugging Face ({', '.join(sorted(set(hf.values())))}), "
            f"which needs the transformers package and files from the hub; videocoop runs open_clip's own CLIP BPE "
            f"tokenizer and text transformer"
        )


def _weights_source(name: str, pretrained: str | None, checkpoint: str | os.PathLike | None,
                    cache_dir: str | None) -> tuple[str | None, dict]:
    """The weights file to load (None: random weights) and what ``open_clip.create_model``
    needs beside it for those weights."""
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        if not os.path.isfile(checkpoint):
            raise VideoCoopError(f"CLIP checkpoint file not found: {os.path.abspath(checkpoint)}")
        return checkpoint, {}
    if not pretrained:
        return None, {}
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise VideoCoopError(
            f"unknown pretrained tag {pretrained!r} for {name}; "
            f"open_clip knows: {', '.join(tags) or '(none)'}"
        )
    source, looked = _cached_pretrained_file(name, pretrained, cache_dir)
    if source is None:
        raise VideoCoopError(
            f"weights for {name}/{pretrained} are not in the local cache and videocoop never "
            f"downloads. Looked in: {'; '.join(looked)}. Download them once with open_clip on a "
            f"machine with network access, or pass --clip-checkpoint FILE."
        )
    return source, {"force_quick_gelu": bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))}


def load_clip(
    name: str = "ViT-B-32",
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    seed: int = 0,
    cache_dir: str | None = None,
) -> tuple[nn.Module, object]:
    """Build an open_clip model, frozen and in eval mode, and its tokenizer.

    Args:
        name: any open_clip model name (``open_clip.list_models()``) or ``videocoop-tiny``.
        pretrained: an open_clip pretrained tag (``open_clip.list_pretrained_tags_by_model``);
            its file must already be in the cache: nothing is ever downloaded.
        checkpoint: a local checkpoint file; wins over ``pretrained``.
        device: where the model goes.
        precision: ``fp32``; ``fp16`` or ``bf16`` (CLIP weights in half precision, as
            CoOp's default, layer norms in fp32); ``amp`` (fp32 weights, autocast in the
            training step).
        seed: random weights are drawn from this seed when neither ``pretrained`` nor
            ``checkpoint`` is given.
        cache_dir: where to look for pretrained files (open_clip's default when None).

    Returns:
        ``(clip_model, tokenizer)``; no parameter of ``clip_model`` requires grad.

    Raises:
        VideoCoopError: unknown model name, precision or tag, weights not found (the
            message says where it looked), or a model whose tokenizer or text tower
            comes from Hugging Face (SigLIP, CLIPA, RoBERTa...: not supported).
    """
    _check_supported(name, precision)
    check_seed("clip_seed", seed)
    oc_precision = "fp32" if precision == "amp" else precision
    source, kwargs = _weights_source(name, pretrained, checkpoint, cache_dir)
    with _offline(), torch.random.fork_rng(devices=[]):
        # Random init draws from the global CPU generator: seed it so the weights are the
        # same on every machine, without disturbing the caller's RNG stream.
        torch.manual_seed(seed)
        try:
            model = open_clip.create_model(
                name, pretrained=source, precision=oc_precision, device="cpu", cache_dir=cache_dir, **kwargs
            )
        except (RuntimeError, KeyError, ValueError) as e:
            raise VideoCoopError(f"could not load CLIP {name} from {source}: {e}") from e
        tokenizer = open_clip.get_tokenizer(name)
    if source is None:
        warnings.warn(UntrainedModelWarning(name, seed), stacklevel=2)
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    return model, tokenizer


def load_clip_of(cfg, device: str | torch.device = "cpu", precision: str = "fp32") -> tuple[nn.Module, object]:
    """:func:`load_clip` of the CLIP a config names: any config with ``clip_model``,
    ``pretrained``, ``clip_checkpoint`` and ``clip_seed`` (train, extract, zero-shot)."""
    return load_clip(cfg.clip_model, pretrained=cfg.pretrained, checkpoint=cfg.clip_checkpoint, device=device,
                     precision=precision, seed=cfg.clip_seed)


def weights_id_of(cfg) -> str:
    """:func:`weights_id` of the weights a config names (``pretrained``, ``clip_checkpoint``, ``clip_seed``)."""
    return weights_id(cfg.pretrained, cfg.clip_checkpoint, cfg.clip_seed)


def text_tower(clip_model: nn.Module) -> nn.Module:
    """The module that owns the text path: the CLIP model itself, or ``.text`` (CustomTextCLIP)."""
    text = getattr(clip_model, "text", None)
    owner = text if text is not None and hasattr(text, "transformer") else clip_model
    missing = [a for a in ("token_embedding", "positional_embedding", "transformer", "ln_final") if not hasattr(owner, a)]
    if missing:
        raise VideoCoopError(
            f"{type(clip_model).__name__} has no open_clip text transformer (missing {', '.join(missing)}); "
            f"Hugging Face text towers are not supported"
        )
    return owner


def embed_dim(clip_model: nn.Module) -> int:
    """Width of the joint embedding space (what video features must have)."""
    owner = text_tower(clip_model)
    proj = owner.text_projection
    if proj is None:
        return owner.transformer.width
    return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]
