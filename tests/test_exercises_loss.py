"""The checks of notebook 04's exercises (retina_edu.exercises.loss): right, untouched, wrong."""

from __future__ import annotations

import pytest
import torch

from retina_edu.analysis import positive_box_targets
from retina_edu.anchors import generate_anchors
from retina_edu.data import CocoDetection
from retina_edu.exercises.loss import check_beta_half, check_per_image_normalised, check_smooth_l1_grad


def stub(*args):
    """A docstring and the stub comment only, as in the student edition."""
    # YOUR CODE HERE


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


# --- Exercise 1: smooth L1's gradient -------------------------------------------------------------


def right_grad(x, beta=0.11):
    if beta == 0:
        return torch.sign(x)
    return torch.where(x.abs() < beta, x / beta, torch.sign(x))


def test_smooth_l1_grad_right_answer_passes(capsys):
    check_smooth_l1_grad(right_grad)
    assert capsys.readouterr().out.startswith("Exercise 1 (smooth L1's gradient): correct, ")


def test_smooth_l1_grad_untouched_stub_is_not_attempted(capsys):
    check_smooth_l1_grad(stub)
    assert capsys.readouterr().out == "Exercise 1 (smooth L1's gradient): not attempted yet\n"

    def raises(x, beta=0.11):
        raise NotImplementedError

    check_smooth_l1_grad(raises)
    assert capsys.readouterr().out == "Exercise 1 (smooth L1's gradient): not attempted yet\n"


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (lambda x, beta=0.11: torch.where(x.abs() <= beta, x / beta, torch.sign(x)), r"smooth_l1_grad\(x, 0\)"),
        (lambda x, beta=0.11: right_grad(x, beta) * 2, "values of smooth_l1_grad"),
        (lambda x, beta=0.11: torch.where(x.abs() < beta, x, torch.sign(x)), r"smooth_l1_grad\(x, 0.11\)"),
        (lambda x, beta=0.11: right_grad(x, beta)[:-1], "has shape"),
    ],
    ids=["beta-zero-divides", "twice", "no-division", "short"],
)
def test_smooth_l1_grad_wrong_answer_says_where(wrong, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 1 \(smooth L1's gradient\): .*{problem}"):
        check_smooth_l1_grad(wrong)


# --- Exercises 2 and 3: a real batch ------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(tiny_shapes):
    """Anchors, targets (one image without objects among them) and random head outputs."""
    data = CocoDetection.from_folder(tiny_shapes)
    targets = [data.get_target(i) for i in range(8)]
    targets[3] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}  # an empty image
    anchors = generate_anchors((96, 96))
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(targets), len(anchors), data.num_classes, generator=gen) - 3
    deltas = 0.3 * torch.randn(len(targets), len(anchors), 4, generator=gen)
    return logits, deltas, anchors, targets


def right_per_image(cls_sums, box_sums, positives):
    n = positives.clamp(min=1).double()
    return (cls_sums / n).mean(), (box_sums / n).mean()


def test_per_image_normalised_right_answer_passes(batch, capsys):
    check_per_image_normalised(right_per_image, *batch)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 2 (torchvision's normaliser): correct, ")
    assert out.endswith("on 8 images, the image without objects included\n")


def test_per_image_normalised_untouched_stub_is_not_attempted(batch, capsys):
    check_per_image_normalised(stub, *batch)
    assert capsys.readouterr().out == "Exercise 2 (torchvision's normaliser): not attempted yet\n"


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (lambda c, b, p: (c.sum() / p.sum(), b.sum() / p.sum()), "per-batch one"),
        (lambda c, b, p: ((c / p).mean(), (b / p).mean()), "divides by 0"),
        (lambda c, b, p: ((c / p.clamp(min=1))[p > 0].mean(), (b / p.clamp(min=1)).mean()), "too (large|small)"),
        (lambda c, b, p: (c / p.clamp(min=1)).mean(), "two numbers"),
    ],
    ids=["per-batch", "no-clamp", "empty-left-out", "one-value"],
)
def test_per_image_normalised_wrong_answer_says_what_without_the_answer(batch, wrong, problem):
    with pytest.raises(AssertionError, match=rf"^Exercise 2 \(torchvision's normaliser\): .*{problem}") as err:
        check_per_image_normalised(wrong, *batch)
    from retina_edu.losses import retinanet_loss

    expected = retinanet_loss(*batch, normalize="image")
    for value in expected.values():
        assert f"{value.item():.4g}" not in str(err.value)


def test_beta_half_right_answer_passes(batch, capsys):
    _, _, anchors, targets = batch
    beta = positive_box_targets(anchors, targets)["deltas"].abs().quantile(0.5).item()
    check_beta_half(beta, anchors, targets)
    assert capsys.readouterr().out.startswith("Exercise 3 (half in the band): correct, ")


def test_beta_half_untouched_stub_is_not_attempted(batch, capsys):
    check_beta_half(None, *batch[2:])
    assert capsys.readouterr().out == "Exercise 3 (half in the band): not attempted yet\n"


@pytest.mark.parametrize("value, problem", [(0.11, "too small"), (2.0, "too large"), ("0.2", "too small")])
def test_beta_half_wrong_answer_says_which_side_without_the_answer(batch, value, problem):
    _, _, anchors, targets = batch
    median = positive_box_targets(anchors, targets)["deltas"].abs().quantile(0.5).item()
    if problem == "too small" and float(value) > median:
        problem = "too large"
    with pytest.raises(AssertionError, match=rf"^Exercise 3 \(half in the band\): .*β is {problem}") as err:
        check_beta_half(value, anchors, targets)
    assert f"{median:.4g}" not in str(err.value) and f"{median:.4f}" not in str(err.value)


def test_beta_half_not_a_number(batch):
    with pytest.raises(AssertionError, match="beta_half should be a number, got str"):
        check_beta_half("half", *batch[2:])
