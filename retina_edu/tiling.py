"""Tiling: cut images larger than the training size into tiles, and stitch detections back (notebook 11).

A detector trained on 256-pixel tiles sees objects at the scale of its training pixels. Shrinking a
2,000-pixel aerial image to 256 pixels would make every tree crown eight times smaller than any it
learnt; cutting it into overlapping tiles keeps the scale. Two things follow:

* training: a box cut by a tile border is kept when enough of it is inside the tile
  (``min_visible``, half its area by default), clipped to the tile; a sliver is dropped rather than
  taught as a whole object;
* detection: each tile is detected on its own, its boxes shifted back by the tile's origin, and one
  class-aware NMS over all tiles removes the duplicates of objects seen by two tiles. Tiles overlap
  by at least the largest object, so every object lies whole inside at least one tile.

Windows are ``(x1, y1, x2, y2)`` in the image's pixels, like boxes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import box_area, check_boxes
from .postprocess import NMS_THRESH

__all__ = ["crop_boxes", "detect_tiled", "stitch_detections", "tile_origins", "tile_windows"]

Detector = Callable[[list[Tensor]], list[dict[str, Tensor]]]
"""Anything called like a RetinaNet in eval mode: a list of ``[3, h, w]`` images in, one detection
dict (``boxes`` xyxy in that image's pixels, ``scores``, ``labels``) per image out."""


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along one side of ``length`` pixels: evenly spread, the last one flush
    with the end, consecutive tiles overlapping by at least ``overlap`` pixels.

    One tile (at 0) when the side fits in a tile.

    >>> tile_origins(400, 256, 64)
    [0, 144]
    """
    for name, value in (("length", length), ("tile", tile)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"tile_origins: {name} must be a whole number >= 1, got {value!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"tile_origins: overlap must be a whole number in [0, tile={tile}), got {overlap!r}")
    if length <= tile:
        return [0]
    # The fewest tiles whose step is at most tile - overlap, then spread them evenly.
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_windows(image_size: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """The tiles of an image of ``image_size = (H, W)``: ``(x1, y1, x2, y2)`` windows, row by row.

    Every pixel is inside at least one window; a side shorter than ``tile`` gives windows as
    short as the side.
    """
    height, width = image_size
    xs, ys = tile_origins(int(width), tile, overlap), tile_origins(int(height), tile, overlap)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def crop_boxes(boxes: Tensor, window: Sequence[int], min_visible: float = 0.5) -> tuple[Tensor, Tensor]:
    """The boxes of one tile: clipped to ``window``, shifted to the tile's pixels.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy in the image's pixels.
        window: the tile ``(x1, y1, x2, y2)`` in the image's pixels.
        min_visible: keep a box when at least this share of its area is inside the tile.

    Returns:
        ``(tile_boxes [M, 4] xyxy in the tile's pixels, keep [N] bool)``: ``keep`` says which of
        ``boxes`` were kept (to select their labels), in order.
    """
    check_boxes(boxes)
    if not 0 < min_visible <= 1:
        raise ValueError(f"crop_boxes: min_visible must be in (0, 1], got {min_visible!r}")
    x1, y1, x2, y2 = (float(v) for v in window)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"crop_boxes: window must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {window}")
    low = boxes.new_tensor([x1, y1, x1, y1])
    high = boxes.new_tensor([x2, y2, x2, y2])
    clipped = torch.minimum(torch.maximum(boxes, low), high)
    area = box_area(boxes)
    visible = box_area(clipped)
    keep = (visible > 0) & (visible >= min_visible * area)
    return clipped[keep] - low, keep


def stitch_detections(
    detections: Sequence[dict[str, Tensor]],
    windows: Sequence[Sequence[int]],
    nms_thresh: float = NMS_THRESH,
    detections_per_img: int | None = None,
) -> dict[str, Tensor]:
    """One image's detections from those of its tiles.

    Each tile's boxes are shifted by the tile's origin, then one class-aware NMS over all of them
    keeps the best of the boxes that two overlapping tiles found for the same object.

    Args:
        detections: one dict per tile (``boxes`` xyxy in the tile's pixels, ``scores``, ``labels``).
        windows: the tiles' ``(x1, y1, x2, y2)`` in the image, in the same order.
        nms_thresh: IoU above which the lower-scored of two same-class boxes is removed (the paper's 0.5).
        detections_per_img: keep at most this many, best first (None: all).

    Returns:
        ``{"boxes" [D, 4] xyxy in the image's pixels, "scores" [D], "labels" [D]}``, best first.
    """
    if len(detections) != len(windows):
        raise ValueError(f"stitch_detections: {len(detections)} detection dicts for {len(windows)} windows")
    if not detections:
        raise ValueError("stitch_detections: no tiles")
    boxes = torch.cat(
        [
            d["boxes"].float() + d["boxes"].new_tensor([w[0], w[1], w[0], w[1]]).float()
            for d, w in zip(detections, windows)
        ]
    )
    scores = torch.cat([d["scores"].float() for d in detections])
    labels = torch.cat([d["labels"].long() for d in detections])
    keep = batched_nms(boxes, scores, labels, nms_thresh)  # best first
    if detections_per_img is not None:
        keep = keep[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


@torch.no_grad()
def detect_tiled(
    detector: Detector,
    image: Tensor,
    tile: int,
    overlap: int,
    nms_thresh: float = NMS_THRESH,
    batch_size: int = 8,
    detections_per_img: int | None = None,
) -> dict[str, Tensor]:
    """Detect on an image of any size by tiles: cut, detect each tile, stitch.

    Args:
        detector: a model in eval mode (or any callable with its calling convention).
        image: ``Tensor[3, H, W]`` in [0, 1].
        tile: the tile side (the training size).
        overlap: the least overlap between tiles, at least the largest object's side so that every
            object is whole in one tile.
        nms_thresh: the NMS threshold across tiles.
        batch_size: tiles per call of the detector.
        detections_per_img: keep at most this many (None: all).

    Returns:
        ``{"boxes", "scores", "labels"}`` in the image's pixels, best first.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"detect_tiled: image must be [3, H, W], got {tuple(image.shape)}")
    windows = tile_windows((int(image.shape[1]), int(image.shape[2])), tile, overlap)
    crops = [image[:, y1:y2, x1:x2] for x1, y1, x2, y2 in windows]
    detections: list[dict[str, Tensor]] = []
    for start in range(0, len(crops), batch_size):
        detections.extend({k: v.cpu() for k, v in d.items()} for d in detector(crops[start : start + batch_size]))
    return stitch_detections(detections, windows, nms_thresh, detections_per_img)
