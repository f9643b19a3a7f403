"""Tests of the loss maps and the threshold/NMS counts of retina_edu.analysis (notebook 09), against
plain float64 loops of the paper's formula and against the model's own detections."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from retina_edu.analysis import LOSS_GROUPS, anchor_loss_map, anchor_outputs, loss_shares, threshold_and_nms
from retina_edu.matching import BACKGROUND, IGNORE, label_anchors
from retina_edu.model import RetinaNet

GRIDS = [(2, 3), (1, 2)]  # two small levels
PER_LOCATION = 2
NUM_CLASSES = 3


@pytest.fixture
def small_image() -> dict[str, torch.Tensor]:
    """16 anchors (8 locations x 2) of 3 classes: positives, ignored and background anchors."""
    g = torch.Generator().manual_seed(0)
    num_anchors = sum(h * w for h, w in GRIDS) * PER_LOCATION
    logits = 3.0 * torch.randn(num_anchors, NUM_CLASSES, generator=g) - 2.0
    matches = torch.full((num_anchors,), BACKGROUND)
    matches[[1, 4, 13]] = torch.tensor([0, 1, 0])
    matches[[2, 9]] = IGNORE
    labels = torch.where(matches >= 0, torch.tensor([2, 0, 1, 0] * 4), matches)
    return {"logits": logits, "matches": matches, "labels": labels}


def plain_loss_map(logits, matches, labels, gamma, alpha, easy=0.5):
    """The formula, one anchor, one class at a time: FL = -α_t (1 - p_t)^γ log p_t."""
    per_anchor, groups = [], dict.fromkeys(LOSS_GROUPS, 0.0)
    for a in range(len(logits)):
        total = 0.0
        for k in range(logits.shape[1]):
            if int(matches[a]) == IGNORE:
                continue
            y = 1 if int(matches[a]) >= 0 and int(labels[a]) == k else 0
            p = 1.0 / (1.0 + math.exp(-float(logits[a, k])))
            p_t = p if y == 1 else 1.0 - p
            alpha_t = 1.0 if alpha is None else (alpha if y == 1 else 1.0 - alpha)
            loss = -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)
            total += loss
            group = "positives" if y == 1 else ("easy negatives" if p_t > easy else "hard negatives")
            groups[group] += loss
        per_anchor.append(total)
    maps, start = [], 0
    for h, w in GRIDS:
        level = [[0.0] * w for _ in range(h)]
        for y in range(h):
            for x in range(w):
                for _ in range(PER_LOCATION):
                    level[y][x] += per_anchor[start]
                    start += 1
        maps.append(torch.tensor(level, dtype=torch.float64))
    total = sum(per_anchor)
    return torch.tensor(per_anchor, dtype=torch.float64), maps, {g: v / total for g, v in groups.items()}, total


@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, 0.25), (2.0, 0.25), (0.5, None), (5.0, 0.75)])
def test_anchor_loss_map_equals_the_plain_formula(small_image, gamma, alpha):
    got = anchor_loss_map(small_image["logits"], small_image["matches"], small_image["labels"], GRIDS, gamma, alpha)
    per_anchor, maps, shares, total = plain_loss_map(
        small_image["logits"], small_image["matches"], small_image["labels"], gamma, alpha
    )
    torch.testing.assert_close(got["loss"], per_anchor, rtol=1e-9, atol=1e-12)
    for got_map, want in zip(got["maps"], maps):
        torch.testing.assert_close(got_map, want, rtol=1e-9, atol=1e-12)
    for group in LOSS_GROUPS:
        assert got["shares"][group] == pytest.approx(shares[group], rel=1e-9, abs=1e-12)
    assert got["total"] == pytest.approx(total, rel=1e-9)
    ce_per_anchor, ce_maps, _, ce_total = plain_loss_map(
        small_image["logits"], small_image["matches"], small_image["labels"], 0.0, alpha
    )
    torch.testing.assert_close(got["ce"], ce_per_anchor, rtol=1e-9, atol=1e-12)
    assert got["ce_over_fl"] == pytest.approx(ce_total / total, rel=1e-9)
    level_totals = [float(m.sum()) / total for m in maps]
    assert got["level_shares"] == pytest.approx(level_totals, rel=1e-9)


def test_ignored_anchors_carry_no_loss_and_the_counts_partition_the_entries(small_image):
    got = anchor_loss_map(small_image["logits"], small_image["matches"], small_image["labels"], GRIDS, 2.0)
    assert got["loss"][[2, 9]].tolist() == [0.0, 0.0]
    assert got["counts"]["ignored"] == 2
    assert got["counts"]["positives"] == 3
    assert sum(got["counts"][g] for g in LOSS_GROUPS) == (len(small_image["logits"]) - 2) * NUM_CLASSES
    assert sum(got["shares"].values()) == pytest.approx(1.0)
    assert sum(got["level_shares"]) == pytest.approx(1.0)


def test_shares_agree_with_loss_shares_over_the_counted_entries(small_image):
    """The per-image shares are notebook 03's loss_shares over the (anchor, class) entries that count."""
    got = anchor_loss_map(small_image["logits"], small_image["matches"], small_image["labels"], GRIDS, 2.0, 0.25)
    valid = small_image["matches"] != IGNORE
    targets = torch.zeros_like(small_image["logits"])
    positive = (small_image["matches"] >= 0).nonzero()[:, 0]
    targets[positive, small_image["labels"][positive]] = 1.0
    want = loss_shares(small_image["logits"][valid].double(), targets[valid], gamma=2.0, alpha=0.25)
    for group in LOSS_GROUPS:
        assert got["shares"][group] == pytest.approx(want[group], rel=1e-6)


def test_gamma_zero_is_cross_entropy_and_focusing_shrinks_the_easy_negatives_share():
    g = torch.Generator().manual_seed(1)
    grids = [(8, 8), (4, 4)]
    num_anchors = 80 * 9
    logits = torch.randn(num_anchors, 2, generator=g) - 5.0  # mostly confident background
    matches = torch.full((num_anchors,), BACKGROUND)
    matches[:12] = 0
    logits[:12, 0] += 7.0  # positives mostly found
    logits[12:40, 1] += 5.0  # a few confusable background anchors: hard negatives
    labels = torch.where(matches >= 0, 0, matches)
    ce = anchor_loss_map(logits, matches, labels, grids, 0.0)
    fl = anchor_loss_map(logits, matches, labels, grids, 2.0)
    assert ce["ce_over_fl"] == pytest.approx(1.0)
    assert ce["shares"] == pytest.approx(ce["ce_shares"])
    assert fl["shares"]["easy negatives"] < 0.5 * ce["shares"]["easy negatives"]
    assert fl["ce_over_fl"] > 5


def test_anchor_loss_map_rejects_inconsistent_inputs(small_image):
    with pytest.raises(ValueError, match="do not fill the grids"):
        anchor_loss_map(small_image["logits"], small_image["matches"], small_image["labels"], [(3, 3)], 2.0)
    with pytest.raises(ValueError, match="matches and labels"):
        anchor_loss_map(small_image["logits"], small_image["matches"][:5], small_image["labels"], GRIDS, 2.0)
    bad = small_image["labels"].clone()
    bad[1] = NUM_CLASSES
    with pytest.raises(ValueError, match="labels in 0..2"):
        anchor_loss_map(small_image["logits"], small_image["matches"], bad, GRIDS, 2.0)


def plain_threshold_and_nms(boxes, scores, labels, gt_boxes, gt_labels, score_thresh, nms_iou, match_iou=0.5):
    """Threshold, greedy NMS per class (a Python loop), then AP's greedy matching."""
    order = sorted((i for i in range(len(scores)) if scores[i] >= score_thresh), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        if all(labels[j] != labels[i] or box_iou(boxes[i : i + 1], boxes[j : j + 1])[0, 0] <= nms_iou for j in kept):
            kept.append(i)
    taken, tp = set(), []
    for i in kept:
        best, best_iou = None, match_iou
        for m in range(len(gt_boxes)):
            iou = float(box_iou(boxes[i : i + 1], gt_boxes[m : m + 1])[0, 0])
            if m not in taken and gt_labels[m] == labels[i] and iou >= best_iou:
                best, best_iou = m, iou
        if best is not None:
            taken.add(best)
        tp.append(best is not None)
    return kept, tp


@pytest.mark.parametrize(("score_thresh", "nms_iou"), [(0.05, 0.5), (0.3, 0.3), (0.5, 0.9), (0.0, 1.0)])
def test_threshold_and_nms_equals_the_plain_loops(score_thresh, nms_iou):
    g = torch.Generator().manual_seed(2)
    gt_boxes = torch.tensor([[10.0, 10, 50, 60], [60, 20, 120, 80], [30, 90, 70, 130]])
    gt_labels = torch.tensor([0, 1, 0])
    # candidates: jittered copies of the ground truth (right and wrong classes) and clutter
    base = gt_boxes[torch.randint(0, 3, (40,), generator=g)]
    boxes = base + 8.0 * torch.randn(40, 4, generator=g)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 4)
    scores = torch.rand(40, generator=g)
    labels = torch.randint(0, 2, (40,), generator=g)
    got = threshold_and_nms(
        {"boxes": boxes, "scores": scores, "labels": labels}, gt_boxes, gt_labels, score_thresh, nms_iou
    )
    kept, tp = plain_threshold_and_nms(boxes, scores, labels, gt_boxes, gt_labels, score_thresh, nms_iou)
    assert got["kept"].tolist() == kept
    assert got["tp"].tolist() == tp
    counts = got["counts"]
    assert (counts["kept"], counts["tp"], counts["fp"]) == (len(kept), sum(tp), len(tp) - sum(tp))
    assert counts["missed"] == 3 - sum(tp)
    assert counts["above threshold"] == int((scores >= score_thresh).sum())


def test_a_duplicate_is_a_false_positive_once_nms_lets_it_through():
    gt_boxes, gt_labels = torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([1])
    candidates = {
        "boxes": torch.tensor([[0.0, 0, 40, 40], [2.0, 0, 42, 40], [0.0, 0, 40, 40]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([1, 1, 0]),
    }
    strict = threshold_and_nms(candidates, gt_boxes, gt_labels, 0.05, 0.5)
    loose = threshold_and_nms(candidates, gt_boxes, gt_labels, 0.05, 0.95)
    assert strict["counts"] == {"candidates": 3, "above threshold": 3, "kept": 2, "tp": 1, "fp": 1, "missed": 0}
    assert (loose["counts"]["kept"], loose["counts"]["tp"], loose["counts"]["fp"]) == (3, 1, 2)
    assert threshold_and_nms(candidates, gt_boxes, gt_labels, 0.95, 0.5)["counts"]["missed"] == 1
    with pytest.raises(ValueError, match="nms_iou"):
        threshold_and_nms(candidates, gt_boxes, gt_labels, 0.05, 0.0)
    with pytest.raises(ValueError, match="score_thresh"):
        threshold_and_nms(candidates, gt_boxes, gt_labels, 1.5, 0.5)


def test_anchor_outputs_are_the_models_own_logits_labels_and_detections():
    torch.manual_seed(0)
    model = RetinaNet(
        3,
        backbone="resnet18",
        fpn_channels=16,
        head_convs=1,
        min_size=128,
        max_size=128,
        anchor_sizes=(16, 32, 64, 128, 256),
        score_thresh=0.01,
    ).eval()
    image = torch.rand(3, 96, 128)
    target = {"boxes": torch.tensor([[10.0, 12, 50, 60], [60, 30, 120, 90]]), "labels": torch.tensor([0, 2])}
    out = anchor_outputs(model, image, target)
    with torch.no_grad():
        batch, sizes, _, scaled = model.preprocess([image], [target])
        cls_logits, _, anchors, _ = model.head_outputs(batch)
        detections = model([image])[0]
    torch.testing.assert_close(out["cls_logits"], cls_logits[0])
    labelled = label_anchors(anchors, scaled)
    assert torch.equal(out["matches"], labelled.matches[0])
    assert out["grid_sizes"] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert out["padded_size"] == (128, 128) and out["input_size"] == tuple(sizes[0]) == (96, 128)
    assert len(out["features"]) == 5 and out["features"][0].shape == (16, 16, 16)
    torch.testing.assert_close(out["boxes"], scaled[0]["boxes"])
    # threshold + NMS at the model's settings give back exactly what the model detects
    kept = threshold_and_nms(
        out["candidates"],
        out["boxes"],
        out["gt_labels"],
        model.config.score_thresh,
        model.config.nms_thresh,
        max_detections=model.config.detections_per_img,
    )["kept"]
    torch.testing.assert_close(out["candidates"]["boxes"][kept], detections["boxes"])
    assert torch.equal(out["candidates"]["labels"][kept], detections["labels"])
    reference = batched_nms(out["candidates"]["boxes"], out["candidates"]["scores"], out["candidates"]["labels"], 0.5)
    assert torch.equal(kept, reference[: model.config.detections_per_img])
    assert model.training is False
