"""CLIP from open_clip: loading (never from a hub), weights ids, the towers, our model configs (data)."""
from .loader import (
    PRECISIONS,
    TINY_MODEL,
    UntrainedModelWarning,
    embed_dim,
    file_sha256,
    load_clip,
    text_tower,
    weights_id,
)

__all__ = ["PRECISIONS", "TINY_MODEL", "UntrainedModelWarning", "embed_dim", "file_sha256", "load_clip", "text_tower",
           "weights_id"]
