"""Checks for the exercises of notebook 09 (evaluation)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..analysis import anchor_loss_map
from ..evaluate import _coco_results, _dataset_parts
from ..matching import BACKGROUND, IGNORE
from ._check import expect_close, expect_number, run_check, wrong

__all__ = ["check_ap_top10", "check_ap_duplicated", "check_ce_over_fl"]

LABEL, IOU = 0, 0.5  # exercises 1 and 2: the AP50 of class 0
DUPLICATE_SCORE = 0.99  # exercise 2: each detection's copy scores this much of the original
GAMMA, ALPHA = 2.0, 0.25  # exercise 3


def _coco_ap(image_ids: Sequence[Any], detections: Sequence[dict[str, Tensor]], dataset: Any, max_dets: int) -> float:
    """pycocotools' AP of class ``LABEL`` at IoU ``IOU``, keeping the best ``max_dets`` detections of
    that class per image (COCO's ``maxDets``); the same scoring as ``retina_edu.evaluate``."""
    from pycocotools.cocoeval import COCOeval

    base, _ = _dataset_parts(dataset)
    results, coco_ids, to_cat = _coco_results(base, image_ids, detections)
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = base.coco_api()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        ev.params.imgIds = sorted(set(coco_ids))
        ev.params.catIds = [to_cat[LABEL]]
        ev.params.iouThrs = np.array([IOU])
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    # precision: [IoU, recall, class, area (0: all), maxDets]; 0 beyond the highest recall reached
    return float(ev.eval["precision"][0, :, 0, 0, 0].mean())


def check_ap_top10(
    ap_top10: Any, image_ids: Sequence[Any], detections: Sequence[dict[str, Tensor]], dataset: Any
) -> None:
    """Exercise 1: the AP50 of class 0 keeping the best 10 detections per image (and class), against
    pycocotools with ``maxDets=10``."""
    exercise = "Exercise 1 (the best 10 per image)"

    def check(value: Any) -> str:
        ap = expect_number(exercise, value, "ap_top10")
        expected = _coco_ap(image_ids, detections, dataset, max_dets=10)
        at_100 = _coco_ap(image_ids, detections, dataset, max_dets=100)
        if abs(ap - at_100) < 1e-9 and abs(at_100 - expected) > 1e-9:
            raise wrong(exercise, "that is the AP with up to 100 detections per image: keep the best 10")
        hint = "class 0 at IoU 0.5, each image's detections of that class cut to its best 10 by score"
        expect_close(exercise, ap, expected, name="ap_top10", rtol=0, atol=1e-9, hint=hint)
        return "equal to pycocotools' AP50 of class 0 with maxDets=10"

    run_check(exercise, ap_top10, check)


def _duplicated(detections: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Every detection twice: the copy has the same box and label and 0.99 of the score."""
    return [
        {
            "boxes": torch.cat([d["boxes"], d["boxes"]]),
            "labels": torch.cat([d["labels"], d["labels"]]),
            "scores": torch.cat([d["scores"], d["scores"] * DUPLICATE_SCORE]),
        }
        for d in detections
    ]


def check_ap_duplicated(
    ap_duplicated: Any, image_ids: Sequence[Any], detections: Sequence[dict[str, Tensor]], dataset: Any
) -> None:
    """Exercise 2: the AP50 of class 0 once every detection is duplicated (score x 0.99), against
    pycocotools on the duplicated detections, all of them kept."""
    exercise = "Exercise 2 (duplicates)"

    def check(value: Any) -> str:
        ap = expect_number(exercise, value, "ap_duplicated")
        doubled = _duplicated(detections)
        keep_all = max([len(d["scores"]) for d in doubled] + [1])
        expected = _coco_ap(image_ids, doubled, dataset, max_dets=keep_all)
        once = _coco_ap(image_ids, detections, dataset, max_dets=keep_all)
        if abs(ap - once) < 1e-9 and abs(once - expected) > 1e-9:
            raise wrong(exercise, "that is the AP without the duplicates: add a copy of every detection")
        hint = (
            "every detection twice, the copy with the same box and label and 0.99 of the score; keep "
            "all of them (max_dets=200)"
        )
        expect_close(exercise, ap, expected, name="ap_duplicated", rtol=0, atol=1e-9, hint=hint)
        return "equal to pycocotools' AP50 of class 0 on the duplicated detections"

    run_check(exercise, ap_duplicated, check)


def _ce_over_fl(outputs: dict[str, Any], alpha: float | None = ALPHA, count_ignored: bool = False) -> float:
    matches = outputs["matches"]
    if count_ignored:  # a common slip: the ignored anchors counted as background
        matches = torch.where(matches == IGNORE, torch.full_like(matches, BACKGROUND), matches)
    loss_map = anchor_loss_map(outputs["cls_logits"], matches, outputs["labels"], outputs["grid_sizes"], GAMMA, alpha)
    return float(loss_map["ce_over_fl"])


def check_ce_over_fl(ce_over_fl: Any, outputs: dict[str, Any]) -> None:
    """Exercise 3: how many times smaller FL's total (γ = 2, α = 0.25) is than CE's (γ = 0, α = 0.25) on one
    image's anchors (``anchor_outputs``), ignored anchors left out; against
    ``retina_edu.analysis.anchor_loss_map``."""
    exercise = "Exercise 3 (CE over FL)"
    rtol = 1e-4  # a float32 sum is fine

    def check(value: Any) -> str:
        ratio = expect_number(exercise, value, "ce_over_fl")
        expected = _ce_over_fl(outputs)
        slips = [  # a usual slip's value, and what to say about it (when it differs from the answer)
            (1 / expected, "that is FL's total over CE's: the exercise asks CE's over FL's"),
            (
                _ce_over_fl(outputs, count_ignored=True),
                "the ignored anchors (matches == IGNORE) count for nothing: leave them out",
            ),
            (
                _ce_over_fl(outputs, alpha=None),
                "weight both losses with α = 0.25 (alpha_t: α on positives, 1 - α on negatives)",
            ),
        ]
        for slip, problem in slips:
            if abs(ratio - slip) <= rtol * slip and abs(slip - expected) > rtol * expected:
                raise wrong(exercise, problem)
        hint = "targets from matches and labels as in section 9; both sums over the same entries"
        expect_close(exercise, ratio, expected, name="ce_over_fl", rtol=rtol, hint=hint)
        return "equal to retina_edu.analysis.anchor_loss_map's ce_over_fl"

    run_check(exercise, ce_over_fl, check)
