"""Checks for the exercises of notebook 02 (matching and box coding)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..boxes import BoxCoder, box_iou
from ..matching import match_anchors
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_iou_by_hand", "check_encode_one", "check_smallest_square"]


def check_iou_by_hand(iou_by_hand: Any) -> None:
    """Exercise 1: the IoU of (0, 0, 10, 10) and (5, 5, 15, 15), typed in, against ``box_iou``."""
    exercise = "Exercise 1 (IoU by hand)"

    def check(value: Any) -> str:
        a = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
        b = torch.tensor([[5.0, 5.0, 15.0, 15.0]], dtype=torch.float64)
        expected = box_iou(a, b).item()
        hint = "the union counts the overlap once: area(A) + area(B) - area(A ∩ B)"
        expect_close(exercise, value, expected, name="iou_by_hand", rtol=0, atol=1e-3, hint=hint)
        return f"IoU = {expected:.4f}: two equal boxes shifted by half their side overlap little"

    run_check(exercise, iou_by_hand, check)


# (anchor, box) in xyxy: a box larger than its anchor and off-centre, a wide anchor, an exact fit.
ENCODE_CASES = (
    ([0.0, 0.0, 32.0, 32.0], [4.0, 2.0, 40.0, 30.0]),
    ([100.0, 50.0, 164.0, 82.0], [90.0, 40.0, 170.0, 100.0]),
    ([0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]),
)
DELTA_NAMES = ("dx", "dy", "dw", "dh")


def check_encode_one(encode_one: Callable) -> None:
    """Exercise 2: ``encode_one(anchor, box)`` in plain Python against ``BoxCoder().encode`` (weights 1)."""
    exercise = "Exercise 2 (encoding one box)"
    coder = BoxCoder()
    first = ENCODE_CASES[0]

    def check(mine: Any) -> str:
        for anchor, box in ENCODE_CASES:
            value = mine if (anchor, box) == first else encode_one(list(anchor), list(box))
            name = f"encode_one({anchor}, {box})"
            try:
                values = [float(v) for v in value]
            except (TypeError, ValueError):
                raise wrong(exercise, f"{name} should be a list of 4 numbers, got {value!r}") from None
            if len(values) != 4:
                raise wrong(exercise, f"{name} should be 4 numbers [dx, dy, dw, dh], got {len(values)}")
            anchors = torch.tensor([anchor], dtype=torch.float64)
            expected = coder.encode(anchors, torch.tensor([box], dtype=torch.float64))[0].tolist()
            for delta, got, want in zip(DELTA_NAMES, values, expected):
                hint = (
                    "a centre shift, in units of the anchor's width or height"
                    if delta in ("dx", "dy")
                    else "the log of the box's size over the anchor's"
                )
                expect_close(exercise, got, want, name=f"{delta} of {name}", rtol=1e-9, atol=1e-12, hint=hint)
        return f"equals BoxCoder().encode on {len(ENCODE_CASES)} anchor-box pairs"

    run_check(exercise, encode_one, check, list(first[0]), list(first[1]))


def _has_positive(sides: torch.Tensor, anchors: torch.Tensor, centre: float) -> torch.Tensor:
    """For squares of each side centred at ``(centre, centre)``: does any anchor match it at IoU >= 0.5?"""
    sides = sides.double()
    squares = torch.stack([centre - sides / 2, centre - sides / 2, centre + sides / 2, centre + sides / 2], -1)
    # one image per square ([B, 1, 4]), matched without low-quality matches as in the exercise
    matches = match_anchors(anchors, squares[:, None, :], allow_low_quality=False)
    return (matches >= 0).any(dim=1)


def smallest_positive_side(anchors: torch.Tensor, centre: float = 100.0) -> float:
    """The smallest side (to 1e-4 px) of a square centred at ``(centre, centre)`` that gets a positive
    anchor at IoU >= 0.5: a scan in 0.1 px steps from 1 to 60 px, then bisection in the last step."""
    sides = torch.arange(10, 601, dtype=torch.float64) / 10
    reach = torch.cat([_has_positive(part, anchors, centre) for part in sides.split(50)])
    if not reach.any():
        raise ValueError(f"no square of side 1 to 60 px centred at ({centre}, {centre}) gets a positive anchor")
    first = int(reach.nonzero()[0])
    if first == 0:
        return float(sides[0])
    lo, hi = float(sides[first - 1]), float(sides[first])
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        if _has_positive(torch.tensor([mid]), anchors, centre).item():
            hi = mid
        else:
            lo = mid
    return hi


def check_smallest_square(smallest_positive_square: Callable, anchors: torch.Tensor) -> None:
    """Exercise 3: the smallest square centred at (100, 100) with a positive anchor (no low-quality
    matches), to within 0.1 px, against a scan with ``match_anchors`` over ``anchors``."""
    exercise = "Exercise 3 (the smallest positive square)"

    def check(value: Any) -> str:
        side = expect_number(exercise, value, "smallest_positive_square()")
        smallest = smallest_positive_side(anchors)
        if side < smallest - 0.1:
            raise wrong(exercise, f"a square of side {side:.4g} px gets no positive anchor: your side is too small")
        if side > smallest + 0.1:
            raise wrong(
                exercise,
                f"{side:.4g} px is too large: smaller squares already get a positive anchor "
                "(scan the sides upwards in steps of at most 0.1 px)",
            )
        return f"{side:.1f} px; a positive anchor from {smallest:.2f} px on"

    run_check(exercise, smallest_positive_square, check)
