"""Checks for the exercises of notebook 01 (boxes and anchors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..anchors import AnchorGenerator, anchor_coverage, dataset_boxes
from ..boxes import box_iou
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_num_anchors", "check_centred_iou", "check_coverage_offset_half"]

# Input sizes (H, W): square and not, multiples of the largest stride and not, and the smallest.
ANCHOR_COUNT_SIZES = ((512, 512), (600, 512), (333, 777), (800, 1333), (1, 1))


def check_num_anchors(num_anchors: Callable) -> None:
    """Exercise 1: ``num_anchors(image_size)`` against the package's ``AnchorGenerator`` (paper settings)."""
    exercise = "Exercise 1 (counting anchors)"
    generator = AnchorGenerator()
    first, *others = ANCHOR_COUNT_SIZES

    def check(mine: Any) -> str:
        for size in ANCHOR_COUNT_SIZES:
            name = f"num_anchors({size})"
            number = expect_number(exercise, mine if size == first else num_anchors(size), name)
            if not number.is_integer():
                raise wrong(exercise, f"{name} = {number:g} should be a whole number of anchors")
            expected = sum(generator.num_anchors_per_level(size))
            hint = "a level of stride s has ceil(H / s) x ceil(W / s) locations, 9 anchors each"
            expect_close(exercise, number, expected, name=name, rtol=0, atol=0.5, hint=hint)
        return f"the right count for {len(ANCHOR_COUNT_SIZES)} input sizes, from 1 x 1 to 800 x 1333"

    run_check(exercise, num_anchors, check, first)


# (side of the square, side of the anchor): smaller, borderline, equal, larger.
CENTRED_PAIRS = ((10.0, 32.0), (22.6, 32.0), (32.0, 32.0), (7.0, 16.0), (50.0, 32.0), (64.0, 16.0))


def _centred_square(side: float) -> torch.Tensor:
    half = side / 2
    return torch.tensor([[-half, -half, half, half]], dtype=torch.float64)


def check_centred_iou(centred_iou: Callable) -> None:
    """Exercise 2: ``centred_iou(s, a)`` in closed form against ``box_iou`` of the two squares."""
    exercise = "Exercise 2 (IoU of centred squares)"
    first = CENTRED_PAIRS[0]

    def check(mine: Any) -> str:
        for s, a in CENTRED_PAIRS:
            value = mine if (s, a) == first else centred_iou(s, a)
            expected = box_iou(_centred_square(s), _centred_square(a)).item()
            hint = "the square is larger than the anchor here" if s > a else "the square fits inside the anchor here"
            expect_close(exercise, value, expected, name=f"centred_iou({s:g}, {a:g})", rtol=0, atol=1e-9, hint=hint)
        return "matches box_iou for squares smaller than, equal to and larger than the anchor"

    run_check(exercise, centred_iou, check, *first)


def check_coverage_offset_half(coverage_offset_half: Any, dataset) -> None:
    """Exercise 3: the share of ``dataset``'s objects some paper anchor centred in its cell
    (``offset=0.5``) overlaps at IoU >= 0.5, against ``anchors.anchor_coverage``."""
    exercise = "Exercise 3 (anchors centred in their cells)"
    boxes, image_sizes = dataset_boxes(dataset)
    half = anchor_coverage(boxes, image_sizes, offset=0.5)

    def check(value: Any) -> str:
        number = expect_number(exercise, value, "coverage_offset_half")
        if not 0 <= number <= 1:
            raise wrong(exercise, f"coverage_offset_half = {number:.4g} should be a fraction in [0, 1]")
        # to within one object: float32 anchors (the notebook's) and float64 ones (the reference's)
        # may disagree on an object whose best IoU is 0.5 to the 7th digit
        atol = 1.5 / max(1, half.num_objects)
        hint = "the paper's anchor sizes, offset=0.5, and the share of objects whose best IoU is >= 0.5"
        expect_close(exercise, number, half.coverage, name="coverage_offset_half", rtol=0, atol=atol, hint=hint)
        zero = anchor_coverage(boxes, image_sizes, offset=0.0)
        return f"{half.coverage:.3f} of the objects with offset 0.5, {zero.coverage:.3f} with offset 0"

    run_check(exercise, coverage_offset_half, check)
