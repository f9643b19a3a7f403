"""The checks of notebook 01's exercises (retina_edu.exercises.anchors): right, untouched, wrong."""

from __future__ import annotations

import math

import pytest
import torch

from retina_edu import anchors as ra
from retina_edu import boxes as rb
from retina_edu.data import CocoDetection
from retina_edu.exercises.anchors import check_centred_iou, check_coverage_offset_half, check_num_anchors

STRIDES = (8, 16, 32, 64, 128)


def stub(*args):
    """A docstring and the stub comment only, as in the student edition."""
    # YOUR CODE HERE


def right_num_anchors(image_size):
    H, W = image_size
    return 9 * sum(math.ceil(H / s) * math.ceil(W / s) for s in STRIDES)


def test_num_anchors_right_answer_passes(capsys):
    check_num_anchors(right_num_anchors)
    assert capsys.readouterr().out.startswith("Exercise 1 (counting anchors): correct, ")


def test_num_anchors_untouched_stub_is_not_attempted(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_num_anchors(stub)
    assert capsys.readouterr().out == "Exercise 1 (counting anchors): not attempted yet\n"


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (lambda size: 9 * sum((size[0] // s) * (size[1] // s) for s in STRIDES), "too small"),  # floor
        (lambda size: sum(math.ceil(size[0] / s) * math.ceil(size[1] / s) for s in STRIDES), "too small"),
        (lambda size: right_num_anchors(size) / 1, "correct"),  # a float that is whole is fine
        (lambda size: 9 * sum((size[0] / s) * (size[1] / s) for s in STRIDES), "whole number"),  # no ceil
    ],
    ids=["floor", "no-9", "whole-float", "no-ceil"],
)
def test_num_anchors_wrong_answer_says_what_without_the_answer(wrong, problem, capsys):
    if problem == "correct":
        check_num_anchors(wrong)
        assert "correct" in capsys.readouterr().out
        return
    with pytest.raises(AssertionError, match=rf"^Exercise 1 \(counting anchors\): .*{problem}") as err:
        check_num_anchors(wrong)
    for size in ((512, 512), (600, 512), (333, 777)):
        assert str(right_num_anchors(size)) not in str(err.value)


def test_centred_iou_right_answer_passes(capsys):
    check_centred_iou(lambda s, a: min(s, a) ** 2 / max(s, a) ** 2)
    assert capsys.readouterr().out.startswith("Exercise 2 (IoU of centred squares): correct, ")


def test_centred_iou_untouched_stub_is_not_attempted(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_centred_iou(stub)
    assert capsys.readouterr().out == "Exercise 2 (IoU of centred squares): not attempted yet\n"


def test_centred_iou_wrong_answer_says_which_case_without_the_answer():
    with pytest.raises(AssertionError, match=r"centred_iou\(50, 32\) = .* is too large \(the square is larger") as err:
        check_centred_iou(lambda s, a: s**2 / a**2)  # right only while the square fits in the anchor
    assert f"{32**2 / 50**2:.4g}" not in str(err.value)
    with pytest.raises(AssertionError, match=r"centred_iou\(10, 32\) = .* is too large"):
        check_centred_iou(lambda s, a: min(s, a) / max(s, a))  # sides, not areas


@pytest.fixture(scope="module")
def dataset(tiny_shapes):
    return CocoDetection.from_folder(tiny_shapes)


def coverage(dataset, offset):
    hits = []
    for i in range(len(dataset)):
        info = dataset.image_info(i)
        anchors = ra.generate_anchors((info["height"], info["width"]), offset=offset)
        boxes = dataset.get_target(i)["boxes"]
        if len(boxes):
            hits.append(rb.box_iou(boxes, anchors).max(dim=1).values >= 0.5)
    return torch.cat(hits).float().mean().item()


def test_coverage_offset_half_right_answer_passes(dataset, capsys):
    check_coverage_offset_half(coverage(dataset, 0.5), dataset)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 3 (anchors centred in their cells): correct, ")
    assert f"{coverage(dataset, 0.0):.3f} with offset 0" in out


def test_coverage_offset_half_untouched_stub_is_not_attempted(dataset, capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_coverage_offset_half(None, dataset)
    assert capsys.readouterr().out == "Exercise 3 (anchors centred in their cells): not attempted yet\n"


def test_coverage_offset_half_wrong_answer_says_what_without_the_answer(dataset):
    half, zero = coverage(dataset, 0.5), coverage(dataset, 0.0)
    wrong = zero if abs(zero - half) > 0.01 else half + 0.05  # offset 0's share, where it differs
    with pytest.raises(AssertionError, match=r"^Exercise 3 \(anchors centred in their cells\): ") as err:
        check_coverage_offset_half(wrong, dataset)
    assert f"{half:.3f}" not in str(err.value) and f"{half:.4g}" not in str(err.value)
    with pytest.raises(AssertionError, match="fraction in"):
        check_coverage_offset_half(100 * half, dataset)
