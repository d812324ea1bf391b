"""Image augmentation for pretraining and the evaluation transform, without torchvision.

torchvision does not load next to the pinned torch, so the usual recipe (RandomResizedCrop,
RandomHorizontalFlip, ToTensor, Normalize; Resize + CenterCrop for evaluation) is written
here with Pillow, numpy and torch, following torchvision's algorithms. Every random draw
comes from a ``torch.Generator`` the caller passes, so an augmented view is a function of
(seed, epoch, index) and a resumed run sees the same images as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

Box = Tuple[int, int, int, int]  # (left, top, width, height) in pixels


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def _randint(high_inclusive: int, generator: torch.Generator) -> int:
    return int(torch.randint(high_inclusive + 1, (1,), generator=generator))


def random_resized_crop_box(width: int, height: int, scale: Tuple[float, float],
                            ratio: Tuple[float, float], generator: torch.Generator) -> Box:
    """torchvision's RandomResizedCrop.get_params: a box covering ``scale`` of the area with
    aspect ratio (w/h) log-uniform in ``ratio``; after 10 misses, the largest centred box
    whose ratio is clamped into ``ratio``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h, generator)
            left = _randint(width - w, generator)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def resize_shorter_side(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Scale so the shorter side is ``size`` (torchvision ``Resize(int)``)."""
    width, height = img.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return img if new == (width, height) else img.resize(new, INTERPOLATIONS[interpolation])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` square (torchvision ``CenterCrop``; the image must be
    at least ``size`` on each side)."""
    width, height = img.size
    if width < size or height < size:
        raise ValueError(f"center_crop: image {width}x{height} is smaller than {size}x{size}")
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> (3, H, W) float32 in [0, 1]."""
    if img.mode != "RGB":
        raise ValueError(f"to_tensor expects an RGB image, got mode {img.mode} (use load_rgb)")
    arr = np.array(img, dtype=np.uint8)  # (H, W, 3), a copy torch may own
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Tuple[float, ...], std: Tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel of a (3, H, W) tensor."""
    mean_t = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean_t) / std_t


def _check_common(input_size: int, mean, std, interpolation: str) -> None:
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")


@dataclass(frozen=True)
class PretrainingAugmentation:
    """RandomResizedCrop -> horizontal flip -> tensor -> normalise; one view per call.

    scale: crop area as a fraction of the image. (0.08, 1) is torchvision's default; the
        MAE / data2vec 2.0 ImageNet recipe uses (0.2, 1) with bicubic resizing.
    hflip_prob: 0.5 for natural images. Set 0 where left and right differ in meaning
        (digits, text): a mirrored "3" is not a 3.
    mean, std: per-channel normalisation (ImageNet statistics by default).
    """

    input_size: int = 224
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip_prob: float = 0.5
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def __post_init__(self):
        _check_common(self.input_size, self.mean, self.std, self.interpolation)
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {self.hflip_prob}")

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        """RGB image -> (3, input_size, input_size) float32."""
        left, top, w, h = random_resized_crop_box(img.width, img.height, self.scale, self.ratio, generator)
        size = (self.input_size, self.input_size)
        img = img.crop((left, top, left + w, top + h)).resize(size, INTERPOLATIONS[self.interpolation])
        # Always draw, so the stream position (and later draws) do not depend on hflip_prob.
        if float(torch.rand(1, generator=generator)) < self.hflip_prob:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return normalize(to_tensor(img), self.mean, self.std)


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``input_size / crop_pct``, centre-crop ``input_size``,
    tensor, normalise (the usual ImageNet evaluation: 256 -> 224 at crop_pct 0.875).
    ``crop_pct = 1`` resizes straight to ``input_size`` (square inputs lose nothing)."""

    input_size: int = 224
    crop_pct: float = 0.875
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def __post_init__(self):
        _check_common(self.input_size, self.mean, self.std, self.interpolation)
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    def __call__(self, img: Image.Image, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """RGB image -> (3, input_size, input_size) float32; ``generator`` is ignored (the
        signature matches PretrainingAugmentation so a dataset can hold either)."""
        img = resize_shorter_side(img, int(self.input_size / self.crop_pct), self.interpolation)
        return normalize(to_tensor(center_crop(img, self.input_size)), self.mean, self.std)
