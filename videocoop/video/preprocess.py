"""CLIP's preprocessing on uint8 tensors on any device: open_clip's inference transform, batched."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ..utils.errors import VideoCoopError

RESIZE_MODES = ("shortest", "squash")  # open_clip's 'longest' (pad to square) is not supported
INTERPOLATIONS = ("bicubic", "bilinear")


@dataclass(frozen=True)
class Preprocess:
    """open_clip's inference transform, on uint8 tensors on any device.

    Resize (bicubic, antialiased, as PIL does) so the shortest side is the model's input
    size, centre crop, scale to [0, 1], normalise with CLIP's mean and std: what
    ``open_clip.image_transform_v2(cfg, is_train=False)`` does to a PIL image, on a batch.
    Build it with :meth:`from_model`; :meth:`pil_transform` is open_clip's own transform
    for the same settings (the reference the tests and the ``extraction-parity`` audit use).
    """

    size: tuple[int, int]  # (height, width) of the model's input
    mean: tuple[float, float, float]  # per RGB channel, on [0, 1] pixels
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # open_clip's default for every CLIP
    resize_mode: str = "shortest"  # shortest side to size, then centre crop; squash: resize to size

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise VideoCoopError(f"resize mode {self.resize_mode!r} is not supported; supported: {', '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise VideoCoopError(f"interpolation {self.interpolation!r} is not supported; supported: {', '.join(INTERPOLATIONS)}")

    @classmethod
    def from_model(cls, clip_model) -> Preprocess:
        """The model's own preprocessing, from open_clip's ``preprocess_cfg``."""
        import open_clip

        cfg = dict(open_clip.get_model_preprocess_cfg(clip_model))
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(size=tuple(int(s) for s in size), mean=tuple(float(m) for m in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                   std=tuple(float(s) for s in cfg.get("std", open_clip.OPENAI_DATASET_STD)),
                   interpolation=cfg.get("interpolation") or "bicubic", resize_mode=cfg.get("resize_mode") or "shortest")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"], d["mean"], d["std"] = list(self.size), list(self.mean), list(self.std)
        d["crop"] = "center" if self.resize_mode == "shortest" else "none"
        d["channels"] = "RGB"
        return d

    def _mode(self) -> InterpolationMode:
        return InterpolationMode.BILINEAR if self.interpolation == "bilinear" else InterpolationMode.BICUBIC

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The size before the crop: open_clip's (torchvision's) shortest-side arithmetic."""
        h, w = self.size
        if self.resize_mode == "squash":
            return h, w
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = h, int(h * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def resize_crop(self, frames: torch.Tensor, two_pass: bool | None = None) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, h, w]``: resize and crop, rounded as PIL rounds.

        On the CPU, torchvision's uint8 antialiased kernel (PIL's integer arithmetic); on
        other devices (or with ``two_pass``), the same filter as two 1-D passes in float,
        each rounded to uint8, width first, as PIL runs it. Both are within two levels of
        PIL on over 99% of pixels (tests/test_video.py); one float pass instead differs by
        up to 24 levels on a fifth of them (bicubic overshoot that PIL clips between passes).
        """
        x = frames.permute(0, 3, 1, 2)  # [T, 3, H, W]
        size = list(self.resized_size(x.shape[2], x.shape[3]))
        if not (x.device.type != "cpu" if two_pass is None else two_pass):
            x = TF.resize(x, size, interpolation=self._mode(), antialias=True)  # [T, 3, h', w'] uint8
        else:
            x = self._resize_two_pass(x, size)
        return TF.center_crop(x, list(self.size))  # [T, 3, h, w]

    def _resize_two_pass(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        """PIL's separable resize on float tensors: width, round, height, round."""
        y = TF.resize(x.float(), [x.shape[2], size[1]], interpolation=self._mode(), antialias=True)  # [T, 3, H, w']
        y = y.round_().clamp_(0, 255)
        y = TF.resize(y, size, interpolation=self._mode(), antialias=True)  # [T, 3, h', w']
        return y.round_().clamp_(0, 255).to(torch.uint8)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, 3, h, w]`` -> float32 normalised ``[N, 3, h, w]`` (ToTensor + Normalize)."""
        return TF.normalize(pixels.float().div(255), list(self.mean), list(self.std))

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` RGB frames -> the image tower's float32 input ``[T, 3, h, w]``."""
        return self.normalize(self.resize_crop(frames))

    def pil_transform(self):
        """open_clip's own PIL transform with these settings (the reference)."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = PreprocessCfg(size=self.size, mean=self.mean, std=self.std, interpolation=self.interpolation,
                            resize_mode=self.resize_mode)
        return image_transform_v2(cfg, is_train=False)
