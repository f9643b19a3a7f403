"""Checks for the exercises of notebook 03 (focal loss)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..losses import binary_cross_entropy, sigmoid_focal_loss
from ._check import expect_close, expect_number, run_check

__all__ = ["check_focal_loss_grad", "check_alpha_balanced_ce", "check_gamma_1000"]


def _logits_and_labels(n: int, scale: float, positive_rate: float, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(0)
    x = scale * torch.randn(n, dtype=dtype, generator=gen)
    y = (torch.rand(n, generator=gen) < positive_rate).to(dtype)
    return x, y


def check_focal_loss_grad(focal_loss_grad: Callable) -> None:
    """Exercise 1: ``focal_loss_grad(logits, targets)`` against autograd through the package's focal loss."""
    exercise = "Exercise 1 (the gradient)"
    x, y = _logits_and_labels(200, 4.0, 0.3)

    def check(mine: Any) -> str:
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(sigmoid_focal_loss(leaf, y, reduction="sum"), leaf)
        hint = "check positives (y = 1) and negatives (y = 0) apart: is the sign s = 2y - 1 in place?"
        expect_close(exercise, mine, expected, name="focal_loss_grad(x, y)", atol=1e-10, hint=hint)
        return "your closed form matches autograd on 200 logits"

    run_check(exercise, focal_loss_grad, check, x, y)


def check_alpha_balanced_ce(alpha_balanced_ce: Callable) -> None:
    """Exercise 2: ``alpha_balanced_ce(logits, targets, alpha=0.25)`` against ``losses.binary_cross_entropy``."""
    exercise = "Exercise 2 (α-balanced cross entropy)"
    x, y = _logits_and_labels(500, 5.0, 0.2, dtype=torch.float32)

    def check(mine: Any) -> str:
        expected = binary_cross_entropy(x, y, alpha=0.25)
        hint = "α_t is α for a positive and 1 - α for a negative; very negative logits need a stable log"
        expect_close(exercise, mine, expected, name="alpha_balanced_ce(x, y)", rtol=1.3e-6, atol=1e-5, hint=hint)
        return "matches retina_edu.losses.binary_cross_entropy on 500 logits"

    run_check(exercise, alpha_balanced_ce, check, x, y, alpha=0.25)


def _ce_over_fl(p_t: float, gamma: float) -> float:
    """How many times smaller FL (no α) is than CE for one positive at probability ``p_t``."""
    x = torch.logit(torch.tensor(p_t, dtype=torch.float64))
    one = torch.tensor(1.0, dtype=torch.float64)
    ce = sigmoid_focal_loss(x, one, alpha=None, gamma=0.0, reduction="sum")
    return (ce / sigmoid_focal_loss(x, one, alpha=None, gamma=gamma, reduction="sum")).item()


def check_gamma_1000(gamma_1000: Any) -> None:
    """Exercise 3: the γ that makes an example at p_t = 0.9 count 1000x less than under CE."""
    exercise = "Exercise 3 (a 1000x discount)"

    def check(value: Any) -> str:
        gamma = expect_number(exercise, value, "gamma_1000")
        ratio = _ce_over_fl(0.9, gamma)
        if abs(ratio - 1000) > 1e-6 * 1000:
            raise AssertionError(
                f"{exercise}: with γ = {gamma:g}, CE/FL at p_t = 0.9 is {ratio:.4g}, not 1000 "
                "(write CE/FL as a power of (1 - p_t))"
            )
        return f"γ = {gamma:g} down-weights p_t = 0.9 by {ratio:.0f}x"

    run_check(exercise, gamma_1000, check)
