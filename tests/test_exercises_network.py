"""The checks of notebook 05's exercises (retina_edu.exercises.network): right, untouched, wrong."""

from __future__ import annotations

import ast
import math
import re

import pytest
import torch

from retina_edu.anchors import anchors_per_level
from retina_edu.boxes import box_iou
from retina_edu.data import CocoDetection
from retina_edu.exercises.network import check_fpn_parameters, check_level_table, check_pyramid_shapes
from retina_edu.model import FPN


def stub(*args):
    """A docstring and the stub comment only, as in the student edition."""
    # YOUR CODE HERE


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


# --- Exercise 1: pyramid shapes -------------------------------------------------------------------


def right_shapes(h, w):
    return [(math.ceil(h / 2**level), math.ceil(w / 2**level)) for level in range(3, 8)]


def test_pyramid_shapes_right_answer_passes(capsys):
    check_pyramid_shapes(right_shapes)
    assert capsys.readouterr().out.startswith("Exercise 1 (pyramid shapes): correct, ")
    check_pyramid_shapes(lambda h, w: torch.tensor(right_shapes(h, w)))  # a tensor of pairs is fine too
    assert "correct" in capsys.readouterr().out


def test_pyramid_shapes_untouched_stub_is_not_attempted(capsys):
    check_pyramid_shapes(stub)
    assert capsys.readouterr().out == "Exercise 1 (pyramid shapes): not attempted yet\n"


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (lambda h, w: [(h // 2**lvl, w // 2**lvl) for lvl in range(3, 8)], r"pyramid_shapes\(200, 333\) gives P3"),
        (lambda h, w: [(math.ceil(w / 2**level), math.ceil(h / 2**level)) for level in range(3, 8)], "gives P3"),
        (lambda h, w: right_shapes(h, w)[:3], "five"),
        (lambda h, w: 5, "pairs"),
    ],
    ids=["floor", "swapped", "three-levels", "a-number"],
)
def test_pyramid_shapes_wrong_answer_says_where_without_the_answer(wrong, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 1 \(pyramid shapes\): .*{problem}") as err:
        check_pyramid_shapes(wrong)
    assert str(right_shapes(200, 333)[0]) not in str(err.value)


# --- Exercise 2: the FPN's parameters -----------------------------------------------------------


def right_fpn_parameters(in_channels, channels=256, p6_from="c5"):
    return sum(p.numel() for p in FPN(in_channels, channels, p6_from=p6_from).parameters())


def test_fpn_parameters_right_answer_passes(capsys):
    check_fpn_parameters(right_fpn_parameters)
    assert capsys.readouterr().out.startswith("Exercise 2 (the FPN's parameters): correct, ")


def test_fpn_parameters_untouched_stub_is_not_attempted(capsys):
    check_fpn_parameters(stub)
    assert capsys.readouterr().out == "Exercise 2 (the FPN's parameters): not attempted yet\n"


def without_biases(in_channels, channels=256, p6_from="c5"):
    return right_fpn_parameters(in_channels, channels, p6_from) - 8 * channels


def p6_always_from_c5(in_channels, channels=256, p6_from="c5"):
    return right_fpn_parameters(in_channels, channels, "c5")


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (without_biases, r"is too small \(are the biases"),
        (p6_always_from_c5, r"'p5'\) = \d+ is too large \(which map does P6 read"),
        (lambda c, n=256, p="c5": right_fpn_parameters(c, n, p) + 1, "is too large"),
    ],
    ids=["no-biases", "p6-from-c5", "one-off"],
)
def test_fpn_parameters_wrong_answer_says_what_without_the_answer(wrong, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 2 \(the FPN's parameters\): .*{problem}") as err:
        check_fpn_parameters(wrong)
    named = re.search(r"fpn_parameters\((\(.*?\)), (\d+), '(c5|p5)'\)", str(err.value))  # the failing case
    in_channels, channels, p6_from = ast.literal_eval(named[1]), int(named[2]), named[3]
    assert str(right_fpn_parameters(in_channels, channels, p6_from)) not in str(err.value)


# --- Exercise 3: where the size rule misses -------------------------------------------------------


@pytest.fixture(scope="module")
def boxes(tiny_shapes):
    data = CocoDetection.from_folder(tiny_shapes)
    return torch.cat([data.get_target(i)["boxes"] for i in range(len(data))])


def right_table(boxes):
    """A box at a time, as a learner might: the size rule's level and the best halved anchor's."""
    per_level = anchors_per_level((256, 256), sizes=(16, 32, 64, 128, 256))
    table = torch.zeros(5, 5, dtype=torch.long)
    for box in boxes:
        w, h = (box[2:] - box[:2]).tolist()
        rule = min(max(math.floor(3 + 1 / 6 + math.log2(math.sqrt(w * h) / 16)), 3), 7) - 3
        best = [box_iou(box[None], anchors).max().item() for anchors in per_level]
        table[rule, best.index(max(best))] += 1
    return table


def test_level_table_right_answer_passes(boxes, capsys):
    check_level_table(right_table(boxes), boxes)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 3 (where the size rule misses): correct, ")
    table = right_table(boxes)
    check_level_table(table.tolist(), boxes)  # a nested list of counts is fine too
    assert "correct" in capsys.readouterr().out
    assert not torch.equal(table, table.T)  # these boxes have misses on one side of the diagonal
    with pytest.raises(AssertionError, match="rows and columns are swapped"):
        check_level_table(table.T, boxes)


def test_level_table_untouched_stub_is_not_attempted(boxes, capsys):
    check_level_table(None, boxes)
    assert capsys.readouterr().out == "Exercise 3 (where the size rule misses): not attempted yet\n"


def test_level_table_wrong_answers_say_what():
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 110.0, 60.0], [5.0, 5.0, 45.0, 45.0]])
    table = right_table(boxes)
    exercise = r"^Exercise 3 \(where the size rule misses\): "
    with pytest.raises(AssertionError, match=exercise + "level_table has shape"):
        check_level_table(table[:4], boxes)
    with pytest.raises(AssertionError, match=exercise + "level_table counts 6 boxes; the val split has 3"):
        check_level_table(2 * table, boxes)
    shifted = torch.zeros(5, 5, dtype=torch.long)
    shifted[:, 1:] = table[:, :4]
    shifted[:, 0] += table[:, 4]
    with pytest.raises(AssertionError, match=exercise + "the column sums"):
        check_level_table(shifted, boxes)
    with pytest.raises(AssertionError, match=exercise + "level_table should hold counts"):
        check_level_table(table.double() + 0.5, boxes)
