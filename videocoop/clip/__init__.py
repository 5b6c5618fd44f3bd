"""CLIP from open_clip: loading (never from a hub), weights ids, the towers, our model configs (data)."""
from .loader import (
    PRECISIONS,
    TINY_MODEL,
    UntrainedModelWarning,
    embed_dim,
    file_sha256,
    load_clip,
    load_clip_of,
    text_tower,
    weights_id,
    weights_id_of,
)

__all__ = ["PRECISIONS", "TINY_MODEL", "UntrainedModelWarning", "embed_dim", "file_sha256", "load_clip", "load_clip_of",
           "text_tower", "weights_id", "weights_id_of"]
