"""Anchors and matching (notebooks 01-02): the labels of the anchors, the IoU they were labelled from,
one pyramid level's anchors of one shape as a grid."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..anchors import AnchorGenerator, feature_map_sizes
from ..boxes import box_iou
from ..matching import BACKGROUND, IGNORE

__all__ = [
    "anchor_grid",
    "best_iou",
    "match_counts",
]


def match_counts(matches: Any) -> dict[str, int]:
    """How many anchors are positive (``>= 0``), ignored (``IGNORE``) and negative (``BACKGROUND``).

    Args:
        matches: ``LongTensor[A]`` (any shape) matched box index per anchor, ``BACKGROUND`` or
            ``IGNORE``, as returned by :func:`retina_edu.matching.match_anchors`.

    Returns:
        ``{"positive": int, "ignored": int, "negative": int}``.
    """
    m = torch.as_tensor(matches).reshape(-1)
    return {
        "positive": int((m >= 0).sum()),
        "ignored": int((m == IGNORE).sum()),
        "negative": int((m == BACKGROUND).sum()),
    }


def best_iou(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """Each anchor's best IoU with any ground-truth box (what the 0.5 / 0.4 thresholds compare).

    Args:
        anchors: ``Tensor[A, 4]`` xyxy.
        gt_boxes: ``Tensor[M, 4]`` xyxy, M >= 0.

    Returns:
        ``Tensor[A]``: ``max_j IoU(anchor, box_j)``, 0 for every anchor when there are no boxes.
    """
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    if len(gt_boxes) == 0:
        return torch.zeros(len(anchors))
    return box_iou(gt_boxes, anchors).max(dim=0).values


def anchor_grid(
    image_size: tuple[int, int],
    level: int,
    scale_index: int,
    ratio_index: int,
    generator: AnchorGenerator | None = None,
) -> Tensor:
    """One pyramid level's anchors of one scale and aspect ratio, laid out as the level's grid.

    Args:
        image_size: ``(H, W)`` of the image.
        level: index of the level in the generator's strides (0 is P3).
        scale_index: index of the scale within a location (``0..len(scales) - 1``).
        ratio_index: index of the aspect ratio (height / width) within a location.
        generator: the anchor settings; ``None`` means the paper's (``AnchorGenerator()``).

    Returns:
        ``Tensor[H_l, W_l, 4]`` xyxy float32 in pixels: the anchor of that shape at every location
        of the level, exactly as ``generator(image_size)`` makes them.
    """
    generator = AnchorGenerator() if generator is None else generator
    num_scales = len(generator.level_sizes[0])
    for name, index, count in (
        ("level", level, len(generator.strides)),
        ("scale_index", scale_index, num_scales),
        ("ratio_index", ratio_index, len(generator.aspect_ratios)),
    ):
        if not 0 <= index < count:
            raise ValueError(f"anchor_grid: {name} must be in 0..{count - 1}, got {index}")
    image_size = (int(image_size[0]), int(image_size[1]))
    per_level = torch.split(generator(image_size), generator.num_anchors_per_level(image_size))
    grid_h, grid_w = feature_map_sizes(image_size, generator.strides)[level]
    # anchor index within a location: ratio major, scale minor (retina_edu.anchors' order)
    per_location = generator.num_anchors_per_location
    return per_level[level].view(grid_h, grid_w, per_location, 4)[:, :, ratio_index * num_scales + scale_index]
