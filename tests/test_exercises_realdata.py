"""The checks of notebook 11's exercises (retina_edu.exercises.realdata): a right answer passes, an
untouched stub is "not attempted", and a typical wrong answer gets a message without the answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retina_edu.anchors import PAPER_ANCHOR_SIZES, dataset_boxes, generate_anchors
from retina_edu.boxes import box_iou
from retina_edu.data import open_dataset
from retina_edu.exercises.realdata import check_centred_iou, check_tile_count, check_unmatched
from retina_edu.tiling import tile_windows

TREES = Path(__file__).resolve().parent.parent / "data" / "trees"


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture(scope="module")
def val_boxes_and_sizes():
    return dataset_boxes(open_dataset(TREES / "val"))


@pytest.fixture(scope="module")
def train_data():
    return open_dataset(TREES / "train")


def solution_unmatched(val_boxes):
    def unmatched(sizes):
        anchors = generate_anchors((400, 400), sizes=sizes)
        best = box_iou(val_boxes[0].float(), anchors).max(dim=1).values
        return int((best < 0.5).sum())

    return unmatched


def stub(*args):
    """The student's stub: a docstring and the stub comment, so it returns None."""
    # YOUR CODE HERE


# --- exercise 1 --------------------------------------------------------------------------------------------


def test_centred_iou_right_answers_pass(capsys):
    for answer in (400 / 1024, 0.3906, torch.tensor(0.390625)):
        check_centred_iou(answer)
        out = capsys.readouterr().out
        assert out.startswith("Exercise 1 (a crown inside an anchor): correct, IoU 0.391 < 0.5"), out


def test_centred_iou_untouched_is_not_attempted(capsys):
    check_centred_iou(None)
    assert capsys.readouterr().out == "Exercise 1 (a crown inside an anchor): not attempted yet\n"


@pytest.mark.parametrize(
    "answer, says",
    [
        (20 / 32, "ratio of sides"),
        (400 / 1424, "counts the overlap once"),
        (0.39, "three significant digits"),
        (0.5, "too large"),
        (1.5, "between 0 and 1"),
        ("about 0.4", "should be a number"),
    ],
)
def test_centred_iou_wrong_answers_say_what_is_off(answer, says):
    with pytest.raises(AssertionError, match=says) as err:
        check_centred_iou(answer)
    assert str(err.value).startswith("Exercise 1 (a crown inside an anchor): ")
    assert not any(leak in str(err.value) for leak in ("0.3906", "0.391", "400 / 1024", "25 / 64"))


# --- exercise 2 --------------------------------------------------------------------------------------------


def test_unmatched_solution_passes(capsys, val_boxes_and_sizes):
    boxes, sizes = val_boxes_and_sizes
    check_unmatched(solution_unmatched(boxes), boxes, sizes)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 2 (unmatched crowns): correct, as retina_edu.anchors"), out
    assert "of 37 crowns unmatched with the paper's sizes" in out


def test_unmatched_stub_is_not_attempted(capsys, val_boxes_and_sizes):
    check_unmatched(stub, *val_boxes_and_sizes)
    assert capsys.readouterr().out == "Exercise 2 (unmatched crowns): not attempted yet\n"

    def raises(sizes):
        raise NotImplementedError

    check_unmatched(raises, *val_boxes_and_sizes)
    assert "not attempted yet" in capsys.readouterr().out


def test_unmatched_on_the_wrong_image_size_says_too_many_without_the_count(val_boxes_and_sizes):
    boxes, sizes = val_boxes_and_sizes

    def on_a_tile(anchor_sizes):  # anchors of a 256 x 256 tile only: the crowns beyond it find none
        anchors = generate_anchors((256, 256), sizes=anchor_sizes)
        return int((box_iou(boxes[0].float(), anchors).max(dim=1).values < 0.5).sum())

    expected = solution_unmatched(boxes)(PAPER_ANCHOR_SIZES)
    with pytest.raises(AssertionError, match="too many .*400 x 400") as err:
        check_unmatched(on_a_tile, boxes, sizes)
    assert f"= {expected} " not in str(err.value) and f" {expected} " not in str(err.value)


def test_unmatched_counting_the_matched_crowns_is_wrong(val_boxes_and_sizes):
    boxes, sizes = val_boxes_and_sizes
    right = solution_unmatched(boxes)
    with pytest.raises(AssertionError, match=r"^Exercise 2 .*too many"):
        check_unmatched(lambda s: len(boxes[0]) - right(s), boxes, sizes)
    with pytest.raises(AssertionError, match="whole number"):
        check_unmatched(lambda s: right(s) + 0.5, boxes, sizes)


# --- exercise 3 --------------------------------------------------------------------------------------------


def test_tile_count_right_answer_passes_and_matches_the_training_tiles(capsys, train_data):
    expected = len(tile_windows((2472, 2299), tile=256, overlap=32))
    check_tile_count(expected, train_data)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 3 (tiles of a large image): correct, 11 across x 11 down"), out
    assert out.rstrip().endswith(f"train_data holds {expected} tiles of that crop")
    check_tile_count(expected)  # without the data: only the count
    assert "train_data" not in capsys.readouterr().out


def test_tile_count_untouched_is_not_attempted(capsys, train_data):
    check_tile_count(None, train_data)
    assert capsys.readouterr().out == "Exercise 3 (tiles of a large image): not attempted yet\n"


@pytest.mark.parametrize(
    "answer, says",
    [(90, "barely overlap"), (132, "at most 256 - 32"), (120, "too small"), (144, "too large"), ("many", "number")],
)
def test_tile_count_wrong_answers_say_what_is_off(answer, says, train_data):
    with pytest.raises(AssertionError, match=says) as err:
        check_tile_count(answer, train_data)
    assert str(err.value).startswith("Exercise 3 (tiles of a large image): ")
    assert "121" not in str(err.value) and "11 " not in str(err.value)
