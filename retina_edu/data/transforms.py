"""Transforms that move the boxes with the image, and the batch collation for detection.

Every transform takes and returns ``(image, target)``:

* ``image``: float tensor ``[3, H, W]`` (RGB in [0, 1] until :class:`Normalize`);
* ``target``: ``{"boxes": Tensor[N, 4] (x1, y1, x2, y2) float32 pixels, "labels": Tensor[N] int64,
  "image_id": int}``; other keys are passed through.

They compose with :class:`Compose`, as torchvision's detection references do::

    train_tf = Compose([RandomHorizontalFlip(0.5), Resize(256), Normalize()])
    image, target = train_tf(image, target)

:class:`Resize` also records ``target["scale"]`` = ``Tensor[4]`` ``(sx, sy, sx, sy)`` (multiplied
through successive resizes), so ``boxes / scale`` maps boxes back to the original image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import load_image  # noqa: F401  (re-exported: it used to live here)

Target = dict[str, Any]

# The one copy of ImageNet's statistics in the package (model.py and the notebooks import these).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, which the pretrained backbones expect (torchvision)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet."""


def _check(name: str, image: Any, target: Any) -> Tensor:
    if not isinstance(image, Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"{name}: image must be a Tensor[C, H, W], got {shape}")
    if not isinstance(target, dict) or "boxes" not in target:
        raise ValueError(f"{name}: target must be a dict with 'boxes', got {type(target).__name__}")
    boxes = target["boxes"]
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if hasattr(boxes, "shape") else type(boxes).__name__
        raise ValueError(f"{name}: target['boxes'] must be a Tensor[N, 4], got {shape}")
    return boxes


class Compose:
    """Apply transforms one after another.

    Args:
        transforms: callables ``(image, target) -> (image, target)``.
    """

    def __init__(self, transforms: Sequence[Callable[[Tensor, Target], tuple[Tensor, Target]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class Resize:
    """Resize the image and scale its boxes.

    With ``keep_aspect=True`` the longer side becomes ``size`` (the aspect ratio is kept) and, with
    ``pad=True``, the image is then letterboxed: zeros are added at the bottom and right to make a
    ``size x size`` square, so the boxes keep their coordinates (padding at the top or left would
    shift them). With ``keep_aspect=False`` the image is stretched to exactly ``size`` (an int for a
    square, or ``(height, width)``).

    Boxes are scaled by the actual per-axis factors ``new_w / W`` and ``new_h / H``.
    ``target["scale"]`` becomes ``Tensor[4]`` ``(sx, sy, sx, sy)`` (times any earlier scale).

    Args:
        size: target size in pixels.
        keep_aspect: keep the aspect ratio (scale the longer side to ``size``).
        pad: with ``keep_aspect``, pad bottom/right with zeros to ``size x size``.
    """

    def __init__(self, size: int | tuple[int, int], keep_aspect: bool = True, pad: bool = True) -> None:
        if keep_aspect and not isinstance(size, int):
            raise ValueError(f"Resize: keep_aspect=True needs an int size, got {size!r}")
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if len(sizes) != 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"Resize: size must be a positive int or (height, width), got {size!r}")
        self.size, self.keep_aspect, self.pad = size, keep_aspect, pad

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        boxes = _check("Resize", image, target)
        h, w = image.shape[-2:]
        if self.keep_aspect:
            scale = self.size / max(h, w)
            new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        else:
            new_h, new_w = (self.size, self.size) if isinstance(self.size, int) else self.size
        if (new_h, new_w) != (h, w):
            # antialias=True low-pass filters when shrinking, as PIL does (no aliasing of thin edges).
            image = F.interpolate(
                image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            )[0]
        if self.keep_aspect and self.pad and (new_h, new_w) != (self.size, self.size):
            image = F.pad(image, (0, self.size - new_w, 0, self.size - new_h))
        factors = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=torch.float32)
        target = dict(target)
        target["boxes"] = boxes * factors.to(boxes.dtype)
        target["scale"] = target.get("scale", torch.ones(4)) * factors
        return image, target

    def __repr__(self) -> str:
        return f"Resize(size={self.size!r}, keep_aspect={self.keep_aspect}, pad={self.pad})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``; boxes become ``x1' = W - x2, x2' = W - x1``.

    Args:
        p: probability of flipping.
        generator: optional ``torch.Generator`` for reproducible flips.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p, self.generator = p, generator

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        boxes = _check("RandomHorizontalFlip", image, target)
        if torch.rand((), generator=self.generator).item() >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return image.flip(-1), target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """``(image - mean) / std`` per channel; the target is unchanged.

    Args:
        mean: per-channel mean (RGB), ImageNet's by default.
        std: per-channel standard deviation.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"Normalize: need as many means as stds, all stds > 0; got mean={mean}, std={std}")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        _check("Normalize", image, target)
        if image.shape[0] != len(self.mean):
            raise ValueError(f"Normalize: image has {image.shape[0]} channels, mean/std have {len(self.mean)}")
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)[:, None, None]
        return (image - mean) / std, target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def denormalize(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Undo :class:`Normalize`: ``image * std + mean`` per channel (for display).

    Args:
        image: Tensor[3, H, W] or Tensor[B, 3, H, W].

    Returns:
        A tensor of the same shape.
    """
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    return image * std_t + mean_t


def collate_fn(batch: Sequence[tuple[Tensor, Target]]) -> tuple[Tensor | list[Tensor], list[Target]]:
    """Collate ``(image, target)`` pairs for a ``DataLoader``.

    Images of one size are stacked (use :class:`Resize` with ``pad=True`` to get there); images of
    different sizes stay a list. Targets always stay a list: each image has its own number of boxes.

    Args:
        batch: ``(image Tensor[3, H, W], target)`` pairs.

    Returns:
        ``(images, targets)``: ``images`` is ``Tensor[B, 3, H, W]`` when all shapes agree, otherwise a
        list of B tensors; ``targets`` is a list of B dicts.
    """
    if len(batch) == 0:
        raise ValueError("collate_fn: empty batch")
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images), targets
    return images, targets
