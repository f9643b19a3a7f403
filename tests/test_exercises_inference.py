"""retina_edu.exercises.inference: the checks of notebook 07's exercises (NMS by hand, class-agnostic NMS)."""

from __future__ import annotations

import re

import pytest
import torch

from retina_edu.boxes import box_iou
from retina_edu.exercises.inference import check_agnostic_nms, check_greedy_nms


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture(scope="module")
def candidates():
    """Stacks of jittered boxes around 8 objects of 3 classes, with wrong-class copies on some: what
    notebook 07's section 2 hands to NMS. Returns ``(boxes [N, 4], scores [N], labels [N])``."""
    gen = torch.Generator().manual_seed(0)
    centres = 20 + 200 * torch.rand(8, 2, generator=gen)
    sizes = 10 + 60 * torch.rand(8, 1, generator=gen)
    objects = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    object_labels = torch.arange(8) % 3
    boxes, labels = [], []
    for box, label in zip(objects, object_labels):
        n = 12
        boxes.append(box + 0.15 * (box[2] - box[0]) * torch.randn(n, 4, generator=gen))
        wrong = torch.rand(n, generator=gen) < 0.3  # some propose another class for the same box
        labels.append(torch.where(wrong, (label + 1) % 3, label))
    boxes = torch.cat(boxes)
    boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], dim=1)
    scores = torch.rand(len(boxes), generator=gen)
    return boxes, scores, torch.cat(labels)


def greedy_nms(boxes, scores, iou_thresh):
    """The notebook's solution."""
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    kept = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= iou[i] > iou_thresh
    return torch.tensor(kept, dtype=torch.long)


def stub(boxes, scores, iou_thresh):
    """The student edition's stub."""
    # YOUR CODE HERE


def test_greedy_nms_right_stub_and_wrong(candidates, capsys):
    check_greedy_nms(greedy_nms, *candidates)
    assert capsys.readouterr().out.startswith("Exercise 1 (NMS by hand): correct, the same boxes")
    check_greedy_nms(stub, *candidates)
    assert capsys.readouterr().out == "Exercise 1 (NMS by hand): not attempted yet\n"


def test_greedy_nms_that_lets_suppressed_boxes_suppress_keeps_too_few(candidates):
    def every_box_suppresses(boxes, scores, iou_thresh):
        order = scores.argsort(descending=True).tolist()
        iou = box_iou(boxes, boxes)
        return torch.tensor([i for k, i in enumerate(order) if not (iou[i, order[:k]] > iou_thresh).any()])

    with pytest.raises(AssertionError, match="too few") as err:
        check_greedy_nms(every_box_suppresses, *candidates)
    assert str(err.value).startswith("Exercise 1 (NMS by hand): ")


def test_greedy_nms_unsorted_or_with_the_wrong_comparison_is_named(candidates):
    def unsorted(boxes, scores, iou_thresh):
        return greedy_nms(boxes, scores, iou_thresh).sort().values

    with pytest.raises(AssertionError, match="not listed best score first"):
        check_greedy_nms(unsorted, *candidates)

    def suppress_below(boxes, scores, iou_thresh):  # keeps a box unless it overlaps *little*
        order = scores.argsort(descending=True).tolist()
        iou = box_iou(boxes, boxes)
        kept = []
        for i in order:
            if not kept or not (iou[i, kept] < iou_thresh).any():
                kept.append(i)
        return torch.tensor(kept)

    with pytest.raises(AssertionError, match=r"Exercise 1 \(NMS by hand\): greedy_nms\(boxes, scores, 0.3\)"):
        check_greedy_nms(suppress_below, *candidates)
    with pytest.raises(AssertionError, match="should return a 1-D tensor of integer indices"):
        check_greedy_nms(lambda b, s, t: s[:3], *candidates)


def agnostic_count(boxes, scores):
    """Exercise 2 computed with the solution of exercise 1 (not torchvision): one NMS over all classes."""
    return int((scores[greedy_nms(boxes, scores, 0.5)[:100]] > 0.3).sum())


def test_agnostic_nms_right_stub_and_wrong(candidates, capsys):
    boxes, scores, labels = candidates
    right = agnostic_count(boxes, scores)
    aware = sum(agnostic_count(boxes[labels == c], scores[labels == c]) for c in range(3))
    assert right != aware  # the data tells the two apart

    check_agnostic_nms(right, *candidates)
    assert capsys.readouterr().out == (
        f"Exercise 2 (class-agnostic NMS): correct, {right} detections above 0.3 with one NMS over all "
        f"classes, {aware} with NMS per class\n"
    )
    check_agnostic_nms(torch.tensor(right), *candidates)  # a tensor is fine too
    assert "correct" in capsys.readouterr().out
    check_agnostic_nms(None, *candidates)
    assert capsys.readouterr().out == "Exercise 2 (class-agnostic NMS): not attempted yet\n"

    with pytest.raises(AssertionError, match="the count after NMS per class") as err:
        check_agnostic_nms(aware, *candidates)
    assert not re.search(rf"\b{right}\b", str(err.value))
    with pytest.raises(AssertionError, match=r"agnostic_above_03 = \d+ is too large") as err:
        check_agnostic_nms(right + 3, *candidates)
    assert not re.search(rf"\b{right}\b", str(err.value))
    with pytest.raises(AssertionError, match="a whole number"):
        check_agnostic_nms(right + 0.5, *candidates)
