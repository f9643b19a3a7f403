"""Checks for the exercises of notebook 07 (inference)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from ..postprocess import DETECTIONS_PER_IMG, NMS_THRESH
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_greedy_nms", "check_agnostic_nms"]

NMS_THRESHOLDS = (0.3, 0.5, 0.7)
SCORE = 0.3  # exercise 2 counts the detections scoring above this


def _as_indices(exercise: str, kept: Any, name: str) -> Tensor:
    """The learner's kept indices as a 1-D LongTensor (a list or an array is fine too)."""
    try:
        indices = torch.as_tensor(kept)
    except (TypeError, ValueError, RuntimeError):
        raise wrong(exercise, f"{name} should return a tensor of indices, got {type(kept).__name__}") from None
    if indices.dim() != 1 or (indices.numel() and indices.is_floating_point()):
        raise wrong(
            exercise,
            f"{name} should return a 1-D tensor of integer indices, got {indices.dtype} of shape "
            f"{tuple(indices.shape)}",
        )
    return indices.long()


def check_greedy_nms(greedy_nms: Callable, boxes: Tensor, scores: Tensor, labels: Tensor) -> None:
    """Exercise 1: ``greedy_nms(boxes, scores, iou_thresh)`` for one class, against ``torchvision.ops.nms``
    on the candidates of each class (notebook 07's section 2) at IoU thresholds 0.3, 0.5 and 0.7."""
    exercise = "Exercise 1 (NMS by hand)"
    classes = [int(c) for c in labels.unique()]
    first = labels == classes[0]

    def check(_: Any) -> str:
        for c in classes:
            b, s = boxes[labels == c], scores[labels == c]
            for t in NMS_THRESHOLDS:
                name = f"greedy_nms(boxes, scores, {t}) on the {len(b)} candidates of class {c}"
                mine = _as_indices(exercise, greedy_nms(b, s, t), name)
                expected = nms(b, s, t)
                if len(mine) > len(expected):
                    raise wrong(
                        exercise,
                        f"{name} keeps {len(mine)} boxes, too many (does each kept box suppress every "
                        "remaining box that overlaps it with IoU above the threshold?)",
                    )
                if len(mine) < len(expected):
                    raise wrong(
                        exercise,
                        f"{name} keeps {len(mine)} boxes, too few (only a kept box may suppress others, "
                        "and only with IoU above the threshold, not at it)",
                    )
                if not torch.equal(mine, expected):
                    if torch.equal(mine.sort().values, expected.sort().values):
                        problem = "keeps the right boxes, but not listed best score first"
                    else:
                        problem = (
                            "keeps as many boxes as it should, but not the right ones "
                            "(visit them from the highest score down)"
                        )
                    raise wrong(exercise, f"{name} {problem}")
        thresholds = ", ".join(map(str, NMS_THRESHOLDS))
        return (
            f"the same boxes as torchvision.ops.nms, in the same order, for each of the {len(classes)} "
            f"classes at IoU {thresholds}"
        )

    run_check(exercise, greedy_nms, check, boxes[first], scores[first], NMS_THRESHOLDS[0])


def _count_above(scores: Tensor, kept: Tensor) -> int:
    """How many of the best ``DETECTIONS_PER_IMG`` kept candidates score above ``SCORE``."""
    return int((scores[kept[:DETECTIONS_PER_IMG]] > SCORE).sum())


def check_agnostic_nms(agnostic_above_03: Any, boxes: Tensor, scores: Tensor, labels: Tensor) -> None:
    """Exercise 2: how many detections score above 0.3 after one NMS over all classes (IoU 0.5, then the
    best 100), on the candidates of notebook 07's section 2."""
    exercise = "Exercise 2 (class-agnostic NMS)"

    def check(value: Any) -> str:
        number = expect_number(exercise, value, "agnostic_above_03")
        if number != int(number):
            raise wrong(exercise, f"agnostic_above_03 = {number:g} should be a count, a whole number")
        agnostic = _count_above(scores, nms(boxes, scores, NMS_THRESH))
        aware = _count_above(scores, batched_nms(boxes, scores, labels, NMS_THRESH))
        if int(number) == aware != agnostic:
            raise wrong(
                exercise,
                "that is the count after NMS per class: run a single NMS over the boxes of all classes",
            )
        hint = f"one NMS over all candidates at IoU {NMS_THRESH}, then count the kept scores above {SCORE}"
        expect_close(exercise, int(number), agnostic, name="agnostic_above_03", rtol=0, atol=0, hint=hint)
        return f"{agnostic} detections above {SCORE} with one NMS over all classes, {aware} with NMS per class"

    run_check(exercise, agnostic_above_03, check)
