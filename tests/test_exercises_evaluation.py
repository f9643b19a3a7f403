"""retina_edu.exercises.evaluation: the checks of notebook 09's exercises (maxDets, duplicates, CE over FL)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from retina_edu.boxes import box_iou
from retina_edu.data import CocoDetection
from retina_edu.exercises.evaluation import check_ap_duplicated, check_ap_top10, check_ce_over_fl
from retina_edu.losses import sigmoid_focal_loss
from retina_edu.matching import BACKGROUND, IGNORE


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


def average_precision(label, iou_threshold, detections, image_ids, dataset, max_dets=100):
    """Notebook 09's AP, built from scratch (section 3): the learner's tool for exercises 1 and 2."""
    scored, gts, num_gt = [], {}, 0
    for n, det in enumerate(detections):
        mine = (det["labels"] == label).nonzero()[:, 0]
        order = mine[det["scores"][mine].argsort(descending=True, stable=True)][:max_dets]
        for j in order.tolist():
            scored.append((det["scores"][j].item(), n, det["boxes"][j]))
        target = dataset.get_target(n)
        gts[n] = target["boxes"][target["labels"] == label]
        num_gt += len(gts[n])
    scored.sort(key=lambda s: -s[0])
    taken = {n: torch.zeros(len(b), dtype=torch.bool) for n, b in gts.items()}
    tp = np.zeros(len(scored))
    for k, (_score, n, box) in enumerate(scored):
        if len(gts[n]) == 0:
            continue
        iou = box_iou(box[None], gts[n])[0]
        iou[taken[n]] = -1
        best = int(iou.argmax())
        if iou[best] >= iou_threshold:
            tp[k], taken[n][best] = 1, True
    tps, fps = np.cumsum(tp), np.cumsum(1 - tp)
    recall = tps / max(num_gt, 1)
    precision = tps / np.maximum(tps + fps, np.finfo(float).eps)
    for k in range(len(precision) - 2, -1, -1):
        precision[k] = max(precision[k], precision[k + 1])
    where = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return np.array([precision[w] if w < len(precision) else 0.0 for w in where]).mean()


@pytest.fixture(scope="module")
def detections_on_tiny_shapes(tiny_shapes: Path):
    """``(image_ids, detections, dataset)``: each object found by a jittered box (some too far off),
    plus 15 clutter boxes of class 0 per image, all with random scores: so that keeping the best 10
    per image changes class 0's AP."""
    dataset = CocoDetection.from_folder(tiny_shapes)
    gen = torch.Generator().manual_seed(0)
    ids, detections = [], []
    for n in range(len(dataset)):
        target = dataset.get_target(n)
        boxes, labels = target["boxes"], target["labels"]
        found = boxes + 3 * torch.randn(len(boxes), 4, generator=gen)
        found = torch.cat([found[:, :2], torch.maximum(found[:, 2:], found[:, :2] + 1)], dim=1)
        xy = 80 * torch.rand(15, 2, generator=gen)
        clutter = torch.cat([xy, xy + 4 + 12 * torch.rand(15, 2, generator=gen)], dim=1)
        ids.append(target["image_id"])
        detections.append(
            {
                "boxes": torch.cat([found, clutter]),
                "labels": torch.cat([labels, torch.zeros(15, dtype=torch.long)]),
                "scores": torch.rand(len(boxes) + 15, generator=gen),
            }
        )
    return ids, detections, dataset


def test_ap_top10_right_stub_and_wrong(detections_on_tiny_shapes, capsys):
    ids, detections, dataset = detections_on_tiny_shapes
    right = average_precision(0, 0.5, detections, ids, dataset, max_dets=10)
    at_100 = average_precision(0, 0.5, detections, ids, dataset)
    assert abs(right - at_100) > 1e-3  # the data tells them apart

    check_ap_top10(right, ids, detections, dataset)
    assert capsys.readouterr().out == (
        "Exercise 1 (the best 10 per image): correct, equal to pycocotools' AP50 of class 0 with maxDets=10\n"
    )
    check_ap_top10(None, ids, detections, dataset)
    assert capsys.readouterr().out == "Exercise 1 (the best 10 per image): not attempted yet\n"
    with pytest.raises(AssertionError, match="up to 100 detections per image: keep the best 10"):
        check_ap_top10(at_100, ids, detections, dataset)
    with pytest.raises(AssertionError, match="ap_top10 = .* is too small") as err:
        check_ap_top10(average_precision(0, 0.75, detections, ids, dataset, max_dets=10), ids, detections, dataset)
    assert f"{right:.4f}"[:5] not in str(err.value)


def test_ap_duplicated_right_stub_and_wrong(detections_on_tiny_shapes, capsys):
    ids, detections, dataset = detections_on_tiny_shapes
    doubled = [
        {
            "boxes": torch.cat([d["boxes"], d["boxes"]]),
            "labels": torch.cat([d["labels"], d["labels"]]),
            "scores": torch.cat([d["scores"], d["scores"] * 0.99]),
        }
        for d in detections
    ]
    right = average_precision(0, 0.5, doubled, ids, dataset, max_dets=200)
    once = average_precision(0, 0.5, detections, ids, dataset)
    assert right < once

    check_ap_duplicated(right, ids, detections, dataset)
    assert capsys.readouterr().out == (
        "Exercise 2 (duplicates): correct, equal to pycocotools' AP50 of class 0 on the duplicated detections\n"
    )
    check_ap_duplicated(None, ids, detections, dataset)
    assert capsys.readouterr().out == "Exercise 2 (duplicates): not attempted yet\n"
    with pytest.raises(AssertionError, match="the AP without the duplicates"):
        check_ap_duplicated(once, ids, detections, dataset)
    with pytest.raises(AssertionError, match=r"ap_duplicated = [\d.]+ is too large") as err:
        check_ap_duplicated(right + 0.01, ids, detections, dataset)
    assert f"{right:.4f}"[:5] not in str(err.value)


@pytest.fixture(scope="module")
def anchor_outputs():
    """One image's anchors as ``retina_edu.analysis.anchor_outputs`` gives them: logits of 3 classes on
    grids of 4 x 4 and 2 x 2 with 9 anchors per location; 10 positives, 20 ignored, the rest background."""
    gen = torch.Generator().manual_seed(0)
    grid_sizes = [(4, 4), (2, 2)]
    num_anchors = 9 * (16 + 4)
    matches = torch.full((num_anchors,), BACKGROUND)
    order = torch.randperm(num_anchors, generator=gen)
    matches[order[:10]] = torch.randint(0, 3, (10,), generator=gen)
    matches[order[10:30]] = IGNORE
    labels = torch.where(matches >= 0, torch.randint(0, 3, (num_anchors,), generator=gen), BACKGROUND)
    logits = -4 + 2 * torch.randn(num_anchors, 3, generator=gen)
    return {"cls_logits": logits, "matches": matches, "labels": labels, "grid_sizes": grid_sizes}


def solution_ce_over_fl(o, dtype=torch.float64, alpha=0.25, leave_out_ignored=True):
    """Notebook 09's solution of exercise 3 (and the usual slips with other arguments)."""
    logits, matches, labels = o["cls_logits"].to(dtype), o["matches"], o["labels"]
    targets = torch.zeros_like(logits)
    positive = matches >= 0
    targets[positive, labels[positive]] = 1.0
    counted = matches != IGNORE if leave_out_ignored else torch.ones_like(positive)
    totals = [sigmoid_focal_loss(logits[counted], targets[counted], alpha=alpha, gamma=g).sum() for g in (0.0, 2.0)]
    return float(totals[0] / totals[1])


def test_ce_over_fl_right_stub_and_wrong(anchor_outputs, capsys):
    right = solution_ce_over_fl(anchor_outputs)
    check_ce_over_fl(right, anchor_outputs)
    check_ce_over_fl(solution_ce_over_fl(anchor_outputs, dtype=torch.float32), anchor_outputs)
    assert capsys.readouterr().out == (
        "Exercise 3 (CE over FL): correct, equal to retina_edu.analysis.anchor_loss_map's ce_over_fl\n" * 2
    )
    check_ce_over_fl(None, anchor_outputs)
    assert capsys.readouterr().out == "Exercise 3 (CE over FL): not attempted yet\n"

    slips = {
        "FL's total over CE's": 1 / right,
        "the ignored anchors": solution_ce_over_fl(anchor_outputs, leave_out_ignored=False),
        "weight both losses with α": solution_ce_over_fl(anchor_outputs, alpha=None),
        "is too large": right * 1.01,
    }
    for message, value in slips.items():
        with pytest.raises(AssertionError, match=f"^Exercise 3 \\(CE over FL\\): .*{re.escape(message)}") as err:
            check_ce_over_fl(value, anchor_outputs)
        assert f"{right:.3g}" not in str(err.value)


def test_ce_over_fl_without_ignored_anchors_takes_the_right_answer(anchor_outputs, capsys):
    """Where no anchor is ignored, counting them changes nothing: the right answer is not taken for
    that slip."""
    matches = anchor_outputs["matches"]
    none_ignored = {**anchor_outputs, "matches": torch.where(matches == IGNORE, BACKGROUND, matches)}
    check_ce_over_fl(solution_ce_over_fl(none_ignored), none_ignored)
    assert "correct" in capsys.readouterr().out
