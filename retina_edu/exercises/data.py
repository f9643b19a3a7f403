"""Checks for the exercises of notebook 00 (setup and data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..anchors import dataset_boxes
from ..boxes import box_area
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_fraction_below", "check_most_rings"]


def _object_sizes(dataset) -> torch.Tensor:
    """``sqrt(w * h)`` of every box of ``dataset``, float64, from the annotations."""
    boxes, _ = dataset_boxes(dataset)
    if not boxes:
        return torch.zeros(0, dtype=torch.float64)
    return box_area(torch.cat(boxes)).sqrt()


def check_fraction_below(fraction_below: Callable, dataset) -> None:
    """Exercise 1: ``fraction_below(dataset, size)``, the share of boxes with ``sqrt(w * h) < size``.

    Checked at ``size = 32`` (the exercise's question), then at 16 and 64, against the box areas
    of ``retina_edu.boxes.box_area`` over the dataset's annotations."""
    exercise = "Exercise 1 (objects below the smallest anchor)"
    sizes = _object_sizes(dataset)
    hint = "count every box of every image, by its size sqrt(w * h)"

    def check(mine: Any) -> str:
        for size in (32, 16, 64):
            value = mine if size == 32 else fraction_below(dataset, size)
            name = f"fraction_below(dataset, {size})"
            number = expect_number(exercise, value, name)
            if not 0 <= number <= 1:
                raise wrong(exercise, f"{name} = {number:.4g} should be a fraction in [0, 1], not a percentage")
            expected = (sizes < size).double().mean().item() if len(sizes) else 0.0
            expect_close(exercise, number, expected, name=name, rtol=0, atol=1e-4, hint=hint)
        return f"{float(mine):.1%} of the {len(sizes)} objects are below 32 px"

    run_check(exercise, fraction_below, check, dataset, 32)


def _whole_number(exercise: str, value: Any, name: str) -> int:
    number = expect_number(exercise, value, name)
    if not number.is_integer():
        raise wrong(exercise, f"{name} = {number:g} should be a whole number")
    return int(number)


def check_most_rings(most_rings: Callable, dataset) -> None:
    """Exercise 2: ``most_rings(dataset)``, the index of the image with the most rings (the first on a tie)."""
    exercise = "Exercise 2 (the image with the most rings)"
    ring = dataset.classes.index("ring")
    counts = [int((dataset.get_target(i)["labels"] == ring).sum()) for i in range(len(dataset))]

    def check(mine: Any) -> str:
        index = _whole_number(exercise, mine, "most_rings(dataset)")
        if not 0 <= index < len(counts):
            raise wrong(exercise, f"index {index} is not an image of the dataset (0 to {len(counts) - 1})")
        most = max(counts)
        if counts[index] < most:
            rings = f"{counts[index]} ring" + ("" if counts[index] == 1 else "s")
            raise wrong(exercise, f"image {index} holds {rings}; another image holds more")
        if counts.index(most) != index:
            raise wrong(exercise, f"image {index} ties for the most rings, but an image with a smaller index does too")
        return f"image {index} holds {most} rings, the most of any image (and no earlier image has as many)"

    run_check(exercise, most_rings, check, dataset)
