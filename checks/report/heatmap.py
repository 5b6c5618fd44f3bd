"""The eot-collapse similarity heatmap as a PNG, beside the markdown report.

Pillow (installed with torchvision, which open_clip needs) encodes the PNG, so the
picture needs no plotting library. The classes it shows are listed in the report's text
heatmap.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from videocoop.utils.files import atomic_write

CELL = 16  # pixels per class


def heatmap_image(cos: torch.Tensor) -> torch.Tensor:
    """``[3, k*CELL, k*CELL]`` uint8: white at the smallest off-diagonal cosine, dark red at
    the largest (the same scale as the text heatmap), the diagonal black."""
    k = cos.shape[0]
    eye = torch.eye(k, dtype=torch.bool)
    off = cos[~eye]
    lo, hi = float(off.min()), float(off.max())
    t = ((cos - lo) / max(hi - lo, 1e-12)).clamp(0, 1)  # [k, k], 0 = least similar
    white, red = torch.tensor([255.0, 255.0, 255.0]), torch.tensor([150.0, 0.0, 0.0])
    rgb = white[:, None, None] * (1 - t) + red[:, None, None] * t  # [3, k, k]
    rgb[:, eye] = 0
    rgb = rgb.repeat_interleave(CELL, dim=1).repeat_interleave(CELL, dim=2)  # [3, k*CELL, k*CELL]
    return rgb.round().to(torch.uint8)


def write_heatmap_png(cos: torch.Tensor, path: str | Path) -> Path:
    """Write :func:`heatmap_image` of the cosine matrix ``cos`` ``[k, k]`` to ``path``."""
    rgb = heatmap_image(torch.as_tensor(cos, dtype=torch.float32))  # [3, H, W]
    image = Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy())
    return atomic_write(path, lambda fh: image.save(fh, format="PNG"), make_dirs=True)
