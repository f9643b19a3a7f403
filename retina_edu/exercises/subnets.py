"""Checks for the exercises of notebook 06 (subnets and the prior)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..analysis.prior import prior_initial_loss
from ..model import Subnet
from ._check import attempt_cases, correct, expect_number, run_check, wrong

__all__ = ["check_subnet_parameters", "check_pi_balanced", "check_scaled_lr_run"]

# (channels, num_anchors, out_per_anchor, num_convs): COCO's class and box subnets, the CPU preset's
# box subnet, and one without hidden convs.
SUBNET_CASES = ((256, 9, 80, 4), (256, 9, 4, 4), (64, 9, 4, 2), (128, 3, 20, 0))
PAPER_PI = 0.01


def check_subnet_parameters(subnet_parameters: Callable) -> None:
    """Exercise 1: ``subnet_parameters(channels, num_anchors, out_per_anchor, num_convs)`` against the
    parameter count of ``model.Subnet`` (built on the ``meta`` device: no memory, instant)."""
    exercise = "Exercise 1 (the subnet's parameters)"
    mine = attempt_cases(exercise, subnet_parameters, SUBNET_CASES, lambda case: f"subnet_parameters{case}")
    if mine is None:
        return
    for case, value in mine.items():
        call = f"subnet_parameters{case}"
        got = expect_number(exercise, value, call)
        with torch.device("meta"):
            expected = sum(p.numel() for p in Subnet(*case).parameters())
        if got == expected:
            continue
        channels, num_anchors, out_per_anchor, num_convs = case
        hints = {
            -(num_convs * channels + num_anchors * out_per_anchor): "are the biases counted?",
            -num_anchors * out_per_anchor * (9 * channels + 1): "is the last conv, to A · K channels, counted?",
        }
        hint = hints.get(got - expected, "each 3×3 conv has 9 · c_in · c_out weights and c_out biases")
        side = "too large" if got > expected else "too small"
        raise wrong(exercise, f"{call} = {got:.0f} is {side} ({hint})")
    correct(exercise, f"your formula counts retina_edu.model.Subnet exactly in all {len(SUBNET_CASES)} settings")


def check_pi_balanced(pi_balanced: Any, num_positive: int, num_negative: int, num_classes: int) -> None:
    """Exercise 2: the π at which the cross-entropy loss of the targets 0 equals that of the targets 1.

    The two parts come from ``analysis.prior_initial_loss`` (γ = 0, no α), for the notebook's P, N, K."""
    exercise = "Exercise 2 (a balanced prior)"

    def check(value: Any) -> str:
        pi = expect_number(exercise, value, "pi_balanced")
        if not 0 < pi < 1:
            raise wrong(exercise, f"pi_balanced = {pi:g} is not a probability in (0, 1)")
        parts = prior_initial_loss(pi, num_positive, num_negative, num_classes, gamma=0.0, alpha=None)
        ratio = parts["background"] / parts["objects"]
        if abs(ratio - 1) > 0.01:
            side = "large" if ratio > 1 else "small"  # the background's part grows with π, the objects' shrinks
            raise wrong(
                exercise,
                f"at π = {pi:.3g} the targets 0 carry {ratio:.3g} times the loss of the targets 1: π is too {side}",
            )
        where = "above" if PAPER_PI > pi else "below"
        return f"π = {pi:.2e} balances them ({parts['objects']:.3g} each); the paper's {PAPER_PI} lies {where} it"

    run_check(exercise, pi_balanced, check)


def _losses(exercise: str, history: Any) -> list[float]:
    if isinstance(history, torch.Tensor):
        history = history.tolist()
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        kind = type(history).__name__
        raise wrong(exercise, f"scaled_lr_run should be the list of losses train_run returns, got {kind}")
    if len(history) == 0:
        raise wrong(exercise, "scaled_lr_run is empty: train_run returns one loss per step")
    try:
        return [float(v) for v in history]
    except (TypeError, ValueError):
        raise wrong(exercise, "scaled_lr_run should hold one number (a loss) per step") from None


def check_scaled_lr_run(scaled_lr_run: Any, runs: Mapping[tuple[str, float], Sequence[float]]) -> None:
    """Exercise 3: the cross-entropy, bias-0 run at another learning rate, checked against the runs of
    section 5 (``runs[name, pi]``, the loss histories of ``train_run``); nothing is trained here.

    The first loss comes before any step, so it must equal that of the lr-0.01 run from bias 0 (same
    model, same batches); from the second loss on, a different learning rate takes another path."""
    exercise = "Exercise 3 (is it the learning rate?)"
    reference = [float(v) for v in runs["CE", 0.5]]
    steps = max(len(run) for run in runs.values())

    def same(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-6)

    def check(history: Any) -> str:
        losses = _losses(exercise, history)
        if len(losses) > steps:
            raise wrong(exercise, f"scaled_lr_run has {len(losses)} losses; the runs of section 5 have {steps} steps")
        if not same(losses[0], reference[0]):
            other = [f"{name} with π = {pi}" for (name, pi), run in runs.items() if same(losses[0], float(run[0]))]
            found = f"it starts like the run {other[0]}" if other else "its first loss matches no run of section 5"
            raise wrong(exercise, f"{found}: train the cross-entropy model from bias 0 (π = 0.5, γ = 0, no α)")
        if len(losses) > 1 and len(reference) > 1 and same(losses[1], reference[1]):
            raise wrong(exercise, "it follows the lr-0.01 run step for step: did the learning rate change?")
        return (
            "the cross-entropy model from bias 0 (its first loss is the lr-0.01 run's), on a path of its own "
            "from the second step: another learning rate (the check cannot tell which; the exercise asks 0.0025)"
        )

    run_check(exercise, scaled_lr_run, check)
