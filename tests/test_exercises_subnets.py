"""The checks of notebook 06's exercises (retina_edu.exercises.subnets): right, untouched, wrong."""

from __future__ import annotations

import math

import pytest

from retina_edu.exercises.subnets import check_pi_balanced, check_scaled_lr_run, check_subnet_parameters

P, N, K = 508, 96_923, 4  # notebook 06's batch of 8 images


def stub(*args):
    """A docstring and the stub comment only, as in the student edition."""
    # YOUR CODE HERE


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


# --- Exercise 1: the subnet's parameters ----------------------------------------------------------


def right_subnet_parameters(channels, num_anchors, out_per_anchor, num_convs=4):
    hidden = num_convs * (9 * channels * channels + channels)
    return hidden + 9 * channels * num_anchors * out_per_anchor + num_anchors * out_per_anchor


def test_subnet_parameters_right_answer_passes(capsys):
    check_subnet_parameters(right_subnet_parameters)
    assert capsys.readouterr().out.startswith("Exercise 1 (the subnet's parameters): correct, ")


def test_subnet_parameters_untouched_stub_is_not_attempted(capsys):
    check_subnet_parameters(stub)
    assert capsys.readouterr().out == "Exercise 1 (the subnet's parameters): not attempted yet\n"


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (lambda c, a, k, n=4: n * 9 * c * c + 9 * c * a * k, r"is too small \(are the biases counted"),
        (lambda c, a, k, n=4: n * (9 * c * c + c), r"is too small \(is the last conv"),
        (lambda c, a, k, n=4: right_subnet_parameters(c, a, k, n) + c, "is too large"),
    ],
    ids=["no-biases", "no-last-conv", "extra"],
)
def test_subnet_parameters_wrong_answer_says_what_without_the_answer(wrong, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 1 \(the subnet's parameters\): .*{problem}") as err:
        check_subnet_parameters(wrong)
    assert str(right_subnet_parameters(256, 9, 80, 4)) not in str(err.value)


# --- Exercise 2: a balanced prior -----------------------------------------------------------------


def balanced_pi():
    """Bisection on log π for CE's targets-0 part = its targets-1 part (the formula written out)."""
    low, high = 1e-9, 0.5
    for _ in range(80):
        mid = math.sqrt(low * high)
        zeros = (N * K + P * (K - 1)) * -math.log(1 - mid) / P
        low, high = (mid, high) if zeros < -math.log(mid) else (low, mid)
    return math.sqrt(low * high)


def test_pi_balanced_right_answer_passes(capsys):
    check_pi_balanced(balanced_pi(), P, N, K)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 2 (a balanced prior): correct, ")
    assert out.endswith("the paper's 0.01 lies above it\n")


def test_pi_balanced_untouched_stub_is_not_attempted(capsys):
    check_pi_balanced(None, P, N, K)
    assert capsys.readouterr().out == "Exercise 2 (a balanced prior): not attempted yet\n"


@pytest.mark.parametrize(
    "value, problem",
    [(0.01, "π is too large"), (0.001, "π is too small"), (1.5, "not a probability"), ("x", "should be a number")],
)
def test_pi_balanced_wrong_answer_says_which_side_without_the_answer(value, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 2 \(a balanced prior\): .*{problem}") as err:
        check_pi_balanced(value, P, N, K)
    pi = balanced_pi()
    for shown in (f"{pi:.2e}", f"{pi:.3g}", f"{pi:.2g}"):
        assert shown not in str(err.value)


# --- Exercise 3: is it the learning rate? -----------------------------------------------------------

RUNS = {  # the shape of section 5's loss histories: (loss, π) -> the classification loss per step
    ("CE", 0.01): [8.26, 8.1, 7.9, 7.5, 6.56],
    ("CE", 0.5): [253.0, 120.0, 9e5, float("nan")],
    ("FL", 0.01): [1.13, 1.13, 1.13, 1.13, 1.13],
    ("FL", 0.5): [47.3, 20.0, 5.0, 1.0, 0.72],
}


def test_scaled_lr_run_right_answer_passes(capsys):
    check_scaled_lr_run([253.0, 180.0, 150.0, 60.0, 12.5], RUNS)
    assert capsys.readouterr().out.startswith("Exercise 3 (is it the learning rate?): correct, ")


def test_scaled_lr_run_untouched_stub_is_not_attempted(capsys):
    check_scaled_lr_run(None, RUNS)
    assert capsys.readouterr().out == "Exercise 3 (is it the learning rate?): not attempted yet\n"


@pytest.mark.parametrize(
    "history, problem",
    [
        ([8.26, 8.0, 7.0], "it starts like the run CE with π = 0.01"),
        ([47.3, 30.0], "it starts like the run FL with π = 0.5"),
        ([100.0, 50.0], "its first loss matches no run"),
        ([253.0, 120.0, 9e5], "did the learning rate change"),
        ([], "is empty"),
        ([253.0] * 6, "has 6 losses"),
        ("253", "should be the list of losses"),
        (["a", "b"], "one number"),
    ],
    ids=["prior", "focal", "other", "same-lr", "empty", "too-long", "a-string", "not-numbers"],
)
def test_scaled_lr_run_wrong_answer_says_what(history, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 3 \(is it the learning rate\?\): .*{problem}"):
        check_scaled_lr_run(history, RUNS)
