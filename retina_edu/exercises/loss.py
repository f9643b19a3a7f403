"""Checks for the exercises of notebook 04 (the RetinaNet loss)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..analysis.loss import loss_sums_per_image, normalise_loss, positive_box_targets, quadratic_share
from ..losses import SMOOTH_L1_BETA, retinanet_loss, smooth_l1_loss
from ._check import attempt_cases, correct, expect_close, expect_number, run_check, wrong

__all__ = ["check_smooth_l1_grad", "check_per_image_normalised", "check_beta_half"]

GRAD_BETAS = (0.0, SMOOTH_L1_BETA, 0.5)  # L1, Detectron's smooth L1, a wide band


def check_smooth_l1_grad(smooth_l1_grad: Callable) -> None:
    """Exercise 1: ``smooth_l1_grad(x, beta)`` against autograd through ``losses.smooth_l1_loss``, for three β."""
    exercise = "Exercise 1 (smooth L1's gradient)"
    x = torch.arange(-100, 101, dtype=torch.float64) / 100  # -1 to 1: 0 and every β's edge exactly
    mine = attempt_cases(
        exercise,
        smooth_l1_grad,
        GRAD_BETAS,
        lambda beta: f"smooth_l1_grad(x, {beta:g})",
        lambda beta: (x.clone(), beta),
    )
    if mine is None:
        return
    for beta, grad in mine.items():
        name = f"smooth_l1_grad(x, {beta:g})"
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(smooth_l1_loss(leaf, torch.zeros_like(leaf), beta=beta), leaf)
        if beta == 0:
            hint = "β = 0 is L1: there is no quadratic band to divide by β in"
        else:
            hint = "differentiate each branch: 0.5 x² / β inside |x| < β, |x| - 0.5 β outside"
        expect_close(exercise, grad, expected, name=name, rtol=1e-6, atol=1e-9, hint=hint)
    betas = ", ".join(f"{beta:g}" for beta in GRAD_BETAS)
    correct(exercise, f"your gradient matches autograd through retina_edu.losses.smooth_l1_loss (β = {betas})")


def check_per_image_normalised(
    per_image_normalised: Callable,
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    targets: list[dict[str, Tensor]],
) -> None:
    """Exercise 2: ``per_image_normalised(cls_sums, box_sums, positives)`` against
    ``retinanet_loss(..., normalize="image")`` on the same head outputs."""
    exercise = "Exercise 2 (torchvision's normaliser)"
    sums = loss_sums_per_image(cls_logits, box_deltas, anchors, targets)
    expected = retinanet_loss(cls_logits, box_deltas, anchors, targets, normalize="image")
    per_batch = normalise_loss(sums, "batch")
    empty = int((sums["positives"] == 0).sum())

    def check(result: Any) -> str:
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise wrong(exercise, "per_image_normalised should return two numbers: (classification, box)")
        for part, key, mine in zip(("classification", "box"), ("classification", "bbox_regression"), result):
            name = f"the {part} loss"
            value = mine.detach().double() if isinstance(mine, Tensor) else mine
            if isinstance(value, Tensor) and value.numel() == 1 and not torch.isfinite(value).all():
                raise wrong(exercise, f"{name} is {value.item()}: an image without positives divides by 0")
            number = expect_number(exercise, value, name)
            reference = expected[key].item()
            if math.isclose(number, per_batch[key], rel_tol=1e-4) and not math.isclose(
                reference, per_batch[key], rel_tol=1e-4
            ):
                raise wrong(
                    exercise,
                    f"{name} is the per-batch one (Detectron's, retina_edu's default), not torchvision's per-image one",
                )
            hint = "does the image without objects count? Its classification sum is not zero"
            expect_close(exercise, number, reference, name=name, rtol=1e-4, atol=1e-6, hint=hint)
        with_empty = {0: "", 1: ", the image without objects included"}.get(
            empty, f", the {empty} images without objects included"
        )
        return f"matches retinanet_loss(normalize='image') on {len(targets)} images{with_empty}"

    run_check(exercise, per_image_normalised, check, sums["classification"], sums["bbox_regression"], sums["positives"])


def check_beta_half(beta_half: Any, anchors: Tensor, targets: list[dict[str, Tensor]]) -> None:
    """Exercise 3: the β whose quadratic band ``|x| < β`` holds half of the batch's target offsets.

    The offsets come from ``analysis.positive_box_targets`` (the ``target_deltas`` of the notebook)."""
    exercise = "Exercise 3 (half in the band)"
    deltas = positive_box_targets(anchors, targets)["deltas"]

    def check(value: Any) -> str:
        beta = expect_number(exercise, value, "beta_half")
        share = quadratic_share(deltas, beta)
        if abs(share - 0.5) > 0.01:
            side = "small" if share < 0.5 else "large"
            raise wrong(
                exercise,
                f"with β = {beta:.4g}, {share:.1%} of the offsets lie in the band |x| < β: β is too {side}",
            )
        return f"β = {beta:.4f} puts {share:.1%} of the {deltas.numel()} offsets in the quadratic band"

    run_check(exercise, beta_half, check)
