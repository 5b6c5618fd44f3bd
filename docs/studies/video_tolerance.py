"""The video audits' half-precision tolerance, measured (checks/tolerances.py, VIDEO_NOISE_FACTOR).

Run from the repository root: ``python docs/studies/video_tolerance.py`` (seconds on two CPU cores). On the
zoo's bf16 temporal attention (checks.faults.zoo.heads, the tiny random-weight CLIP), for five seeds of
probe videos [2, 4, 32]: the noise floor (how far the logits move when the videos move by half a unit of
bf16, signs seeded), how far 3 zero frames appended with their mask move the correct model's logits, and
how far they move the same model run without its padding mask.
"""
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]
warnings.simplefilter("ignore")

from checks.faults import NAMES, tiny_clip  # noqa: E402
from checks.faults.zoo import heads  # noqa: E402
from checks.tolerances import VIDEO_NOISE_FACTOR, rel_diff  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    clip, tok = tiny_clip()
    clean = heads.bf16_head(clip, tok, NAMES).model.eval()
    fault = heads.bf16_head_mask_dropped(clip, tok, NAMES).model.eval()
    eps = torch.finfo(torch.bfloat16).eps
    print("seed  floor     clean/floor  fault/tolerance")
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 4, 32, generator=g)
        sign = torch.randint(0, 2, x.shape, generator=g) * 2 - 1
        padded = torch.cat([x, torch.zeros(2, 3, 32)], 1)
        mask = torch.arange(7)[None].expand(2, -1) < 4
        with torch.no_grad():
            floor = float(rel_diff(clean(x * (1 + 0.5 * eps * sign)), clean(x)).max())
            moved = float(rel_diff(clean(padded, mask), clean(x)).max())
            broken = float(rel_diff(fault(padded, mask), fault(x)).max())
        print(f"{seed}     {floor:.2e}  {moved / floor:.2f}         {broken / (VIDEO_NOISE_FACTOR * floor):.1f}")
