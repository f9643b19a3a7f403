"""Checks for the exercises of notebook 11 (real images: tree crowns)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..anchors import PAPER_ANCHOR_SIZES, anchor_coverage
from ..boxes import box_iou
from ..tiling import tile_windows
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_centred_iou", "check_unmatched", "check_tile_count"]

CROWN, ANCHOR = 20, 32  # exercise 1: a crown centred in an anchor, sides in pixels
# Exercise 3: the larger Yellowstone crop (H, W), the training tile and the least overlap.
CROP_SIZE, TILE, OVERLAP = (2472, 2299), 256, 32
# Exercise 2: the anchor sets the learner's count is compared on (the paper's, the fitted, smaller still).
ANCHOR_SETS = (PAPER_ANCHOR_SIZES, (16, 32, 64, 128, 256), (8, 16, 32, 64, 128))


def _centred_box(side: float, around: float) -> Tensor:
    low = (around - side) / 2
    return torch.tensor([[low, low, low + side, low + side]], dtype=torch.float64)


def check_centred_iou(answer_iou: Any) -> None:
    """Exercise 1: the IoU of a 20 x 20 crown centred in a 32 x 32 anchor, from ``boxes.box_iou``."""
    exercise = "Exercise 1 (a crown inside an anchor)"
    expected = box_iou(_centred_box(CROWN, ANCHOR), _centred_box(ANCHOR, ANCHOR)).item()

    def check(value: Any) -> str:
        iou = expect_number(exercise, value, "answer_iou")
        if not 0 <= iou <= 1:
            raise wrong(exercise, f"answer_iou = {iou:g} is not an IoU: an IoU lies between 0 and 1")
        if math.isclose(iou, CROWN / ANCHOR, rel_tol=1e-3):
            raise wrong(exercise, "answer_iou is a ratio of sides: IoU divides areas")
        if math.isclose(iou, CROWN**2 / (CROWN**2 + ANCHOR**2), rel_tol=1e-3):
            raise wrong(exercise, "answer_iou is too small: the union counts the overlap once, not twice")
        if not math.isclose(iou, expected, rel_tol=1e-3) and math.isclose(iou, expected, rel_tol=2e-2):
            raise wrong(exercise, f"answer_iou = {iou:g} is close: give at least three significant digits")
        hint = "the crown lies inside the anchor: what are the intersection and the union?"
        expect_close(exercise, iou, expected, name="answer_iou", rtol=1e-3, hint=hint)
        return f"IoU {iou:.3f} < 0.5: no {ANCHOR}-px anchor reaches 0.5 with a {CROWN}-px crown, however centred"

    run_check(exercise, answer_iou, check)


def check_unmatched(unmatched: Callable, val_boxes: Sequence[Tensor], val_sizes: Sequence[tuple[int, int]]) -> None:
    """Exercise 2: ``unmatched(sizes)``, the validation crowns without an anchor at IoU >= 0.5, against
    ``anchors.anchor_coverage`` for three sets of anchor sizes."""
    exercise = "Exercise 2 (unmatched crowns)"
    if len(val_boxes) != 1:
        raise ValueError(f"check_unmatched: expected the one validation image's boxes, got {len(val_boxes)} images")
    crowns = len(val_boxes[0])

    def count(sizes: tuple) -> int:
        mine = unmatched(sizes)
        number = expect_number(exercise, mine, f"unmatched({sizes})")
        if number != int(number):
            raise wrong(exercise, f"unmatched({sizes}) = {number:g} should be a whole number of crowns")
        return int(number)

    def check(first: Any) -> str:
        expected = [anchor_coverage(val_boxes, val_sizes, sizes=s).num_unmatched for s in ANCHOR_SETS]
        mine = [count(s) for s in ANCHOR_SETS]
        hint = (
            "a crown is unmatched when its best IoU with every anchor of the 400 x 400 image "
            "(all five levels) is below 0.5"
        )
        for sizes, got, want in zip(ANCHOR_SETS, mine, expected):
            if not 0 <= got <= crowns:
                raise wrong(exercise, f"unmatched({sizes}) = {got}: there are {crowns} crowns")
            if got != want:
                side = "too many" if got > want else "too few"
                raise wrong(exercise, f"unmatched({sizes}) = {got} is {side} ({hint})")
        paper, fitted, smaller = (f"{n} of {crowns}" for n in expected)
        return (
            f"as retina_edu.anchors.anchor_coverage counts: {paper} crowns unmatched with the paper's "
            f"sizes, {fitted} with 16..256, {smaller} with 8..128"
        )

    run_check(exercise, unmatched, check, ANCHOR_SETS[0])


def _tiles_from_crop(train_data: Any, image_size: tuple[int, int]) -> int | None:
    """How many of ``train_data``'s tiles were cut from a source image of ``image_size`` (H, W), read from
    their file names (``<source>_x<left>_y<top>.jpg``, as tools/convert_deepforest.py names them); None
    when the names do not say it."""
    try:
        images = train_data.coco_dict()["images"]
    except (AttributeError, NotImplementedError, KeyError):
        return None
    extent: dict[str, list[int]] = {}
    for im in images:
        cut = re.fullmatch(r"(.+)_x(\d+)_y(\d+)\.\w+", str(im.get("file_name", "")))
        if cut is None:
            return None
        far = extent.setdefault(cut[1], [0, 0, 0])  # bottom, right, tiles
        far[0] = max(far[0], int(cut[3]) + int(im["height"]))
        far[1] = max(far[1], int(cut[2]) + int(im["width"]))
        far[2] += 1
    counts = [n for h, w, n in extent.values() if (h, w) == tuple(image_size)]
    return counts[0] if len(counts) == 1 else None


def check_tile_count(answer_tiles: Any, train_data: Any = None) -> None:
    """Exercise 3: how many 256-px tiles overlapping by at least 32 px cover a 2299 x 2472 image, against
    ``tiling.tile_windows``; with ``train_data``, also how many tiles of that crop it holds."""
    exercise = "Exercise 3 (tiles of a large image)"
    windows = tile_windows(CROP_SIZE, tile=TILE, overlap=OVERLAP)
    expected = len(windows)

    def check(value: Any) -> str:
        tiles = expect_number(exercise, value, "answer_tiles")
        height, width = CROP_SIZE
        if tiles == math.ceil(width / TILE) * math.ceil(height / TILE):
            raise wrong(exercise, "answer_tiles is too small: that many tiles of 256 px barely overlap")
        if tiles == math.ceil(width / (TILE - OVERLAP)) * math.ceil(height / (TILE - OVERLAP)):
            raise wrong(
                exercise,
                "answer_tiles is too large: the first tile covers 256 px, each further one needs to "
                "add at most 256 - 32",
            )
        if tiles != expected:
            side = "too large" if tiles > expected else "too small"
            raise wrong(exercise, f"answer_tiles = {tiles:g} is {side} (count the tiles across and down apart)")
        across = len({w[0] for w in windows})
        shown = f"{across} across x {expected // across} down, as retina_edu.tiling.tile_windows cuts it"
        held = _tiles_from_crop(train_data, CROP_SIZE) if train_data is not None else None
        return shown + (f"; train_data holds {held} tiles of that crop" if held is not None else "")

    run_check(exercise, answer_tiles, check)
