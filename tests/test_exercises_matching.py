"""The checks of notebook 02's exercises (retina_edu.exercises.matching): right, untouched, wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retina_edu.anchors import generate_anchors
from retina_edu.exercises.matching import (
    check_encode_one,
    check_iou_by_hand,
    check_smallest_square,
    smallest_positive_side,
)
from retina_edu.matching import match_anchors


def stub(*args):
    """A docstring and the stub comment only, as in the student edition."""
    # YOUR CODE HERE


def test_iou_by_hand_right_answer_passes(capsys):
    check_iou_by_hand(25 / 175)
    check_iou_by_hand(0.143)  # typed in to three digits
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("Exercise 1 (IoU by hand): correct, ") for line in out)


def test_iou_by_hand_untouched_stub_is_not_attempted(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_iou_by_hand(None)
    assert capsys.readouterr().out == "Exercise 1 (IoU by hand): not attempted yet\n"


@pytest.mark.parametrize("wrong, side", [(25 / 200, "too small"), (0.25, "too large"), ("1/7", "a number")])
def test_iou_by_hand_wrong_answer_says_what_without_the_answer(wrong, side):
    # 25 / 200: the overlap counted twice in the union; 0.25: intersection over one box
    with pytest.raises(AssertionError, match=rf"^Exercise 1 \(IoU by hand\): .*{side}") as err:
        check_iou_by_hand(wrong)
    assert "0.143" not in str(err.value) and "0.1429" not in str(err.value)


def right_encode_one(anchor, box):
    ax1, ay1, ax2, ay2 = anchor
    bx1, by1, bx2, by2 = box
    aw, ah, bw, bh = ax2 - ax1, ay2 - ay1, bx2 - bx1, by2 - by1
    dx = (bx1 + bw / 2 - ax1 - aw / 2) / aw
    dy = (by1 + bh / 2 - ay1 - ah / 2) / ah
    return [dx, dy, math.log(bw / aw), math.log(bh / ah)]


def test_encode_one_right_answer_passes(capsys):
    check_encode_one(right_encode_one)
    check_encode_one(lambda a, b: tuple(right_encode_one(a, b)))  # any sequence of 4 numbers
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("Exercise 2 (encoding one box): correct, ") for line in out)


def test_encode_one_untouched_stub_is_not_attempted(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_encode_one(stub)
    assert capsys.readouterr().out == "Exercise 2 (encoding one box): not attempted yet\n"


def test_encode_one_wrong_answer_names_the_delta_without_the_answer():
    def corner_offsets(anchor, box):  # shifts of the top-left corners instead of the centres
        dx, dy, dw, dh = right_encode_one(anchor, box)
        return [(box[0] - anchor[0]) / (anchor[2] - anchor[0]), dy, dw, dh]

    with pytest.raises(AssertionError, match=r"dx of encode_one\(\[0.0, 0.0, 32.0, 32.0\].* is too small") as err:
        check_encode_one(corner_offsets)
    assert f"{right_encode_one([0, 0, 32, 32], [4, 2, 40, 30])[0]:.6g}" not in str(err.value)

    def ratios(anchor, box):  # the size ratios without the log
        dx, dy, dw, dh = right_encode_one(anchor, box)
        return [dx, dy, math.exp(dw), math.exp(dh)]

    with pytest.raises(AssertionError, match=r"dw of .* \(the log of"):
        check_encode_one(ratios)
    with pytest.raises(AssertionError, match="should be 4 numbers"):
        check_encode_one(lambda a, b: right_encode_one(a, b)[:2])
    with pytest.raises(AssertionError, match="should be a list of 4 numbers"):
        check_encode_one(lambda a, b: 0.5)


@pytest.fixture(scope="module")
def anchors():
    return generate_anchors((256, 256))


def scan(anchors, start=10.0, stop=40.0, step=0.1):
    for side in np.arange(start, stop, step):
        half = float(side) / 2
        box = torch.tensor([[100 - half, 100 - half, 100 + half, 100 + half]])
        if (match_anchors(anchors, box, allow_low_quality=False) >= 0).any():
            return float(side)


def test_smallest_positive_side_is_notebook_01s_derivation(anchors):
    assert smallest_positive_side(anchors) == pytest.approx(32 / math.sqrt(2), abs=1e-3)
    halved = generate_anchors((256, 256), sizes=(16, 32, 64, 128, 256))
    assert smallest_positive_side(halved) > 16 / math.sqrt(2)  # (100, 100) is half a stride off


def test_smallest_square_right_answer_passes(anchors, capsys):
    check_smallest_square(lambda: scan(anchors), anchors)
    check_smallest_square(lambda: 32 / math.sqrt(2), anchors)  # the derivation, to the last digit
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("Exercise 3 (the smallest positive square): correct, 22.7 px; a positive anchor from 22.63 px on")
    assert out[1].startswith("Exercise 3 (the smallest positive square): correct, 22.6 px")


def test_smallest_square_untouched_stub_is_not_attempted(anchors, capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_smallest_square(stub, anchors)
    assert capsys.readouterr().out == "Exercise 3 (the smallest positive square): not attempted yet\n"


def test_smallest_square_wrong_answer_says_what_without_the_answer(anchors):
    # a scan in 1 px steps overshoots
    with pytest.raises(AssertionError, match="23 px is too large: smaller squares") as err:
        check_smallest_square(lambda: scan(anchors, step=1.0), anchors)
    assert "22.6" not in str(err.value) and "22.7" not in str(err.value)
    with pytest.raises(AssertionError, match="side 16 px gets no positive anchor: your side is too small"):
        check_smallest_square(lambda: 16.0, anchors)  # the side of the halved anchors' smallest
