"""The prior initialisation (notebook 06): the first step's classification loss when every score is π,
and the first SGD steps of the class bias alone."""

from __future__ import annotations

import math

import torch

from ..losses import sigmoid_focal_loss

__all__ = [
    "prior_first_steps",
    "prior_initial_loss",
]


def _check_counts(where: str, num_positive: int, num_negative: int, num_classes: int) -> None:
    if num_positive < 1 or num_negative < 0 or num_classes < 1:
        raise ValueError(
            f"{where}: need num_positive >= 1, num_negative >= 0, num_classes >= 1, got "
            f"{num_positive}, {num_negative}, {num_classes}"
        )


def prior_initial_loss(
    pi: float, num_positive: int, num_negative: int, num_classes: int, gamma: float = 2.0, alpha: float | None = 0.25
) -> dict[str, float]:
    """The classification loss at the first step when every score is p = π, divided by P (notebook 06).

    Each of the P positive anchors makes one decision with target 1 and K - 1 with target 0; each
    of the N negative anchors K decisions with target 0. So the loss is
    ``[(N K + P (K - 1)) (1 - α) π^γ (-log(1 - π)) + P α (1 - π)^γ (-log π)] / P``.

    Args:
        pi: the prior probability every score starts at, in (0, 1).
        num_positive, num_negative: P and N, the positive and background anchors of the batch.
        num_classes: K.
        gamma, alpha: the focal loss's (γ = 0 and α = ``None`` for cross entropy).

    Returns:
        ``{"total", "background", "objects"}``: the loss and its parts from the targets 0 (background)
        and the targets 1 (objects), each divided by P.
    """
    _check_counts("prior_initial_loss", num_positive, num_negative, num_classes)
    if not 0 < pi < 1:
        raise ValueError(f"prior_initial_loss: pi must lie in (0, 1), got {pi}")
    w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    zeros = num_negative * num_classes + num_positive * (num_classes - 1)
    background = zeros * w_neg * pi**gamma * -math.log(1 - pi) / num_positive
    objects = w_pos * (1 - pi) ** gamma * -math.log(pi)
    return {"total": background + objects, "background": background, "objects": objects}


def prior_first_steps(
    pi: float,
    num_positive: int,
    num_negative: int,
    num_classes: int,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    steps: int = 10,
    lr: float = 0.01,
    momentum: float = 0.9,
) -> dict[str, list[float]]:
    """The first SGD steps of a tiny model: the class bias b alone, started at ``prior_bias(π)``.

    Every decision of the batch has the logit b (what the prior initialisation gives, up to the
    σ = 0.01 weights), so the loss is that of :func:`prior_initial_loss` at p = sigmoid(b), and
    SGD with momentum (the paper's 0.01 and 0.9) moves b. It shows what the first steps spend
    their effort on: from a bias far from the background's, the first steps push all scores down.
    One shared logit takes the whole gradient; the real network spreads it over its A·K bias
    entries and all the weights below them, so this is the direction and the size of the push on
    the logits, not the step of any one parameter.

    Returns:
        ``{"loss", "bias", "p"}``: one value per step (``steps + 1``, the start included): the
        classification loss (divided by P), the bias and sigmoid(bias).
    """
    _check_counts("prior_first_steps", num_positive, num_negative, num_classes)
    if not 0 < pi < 1:
        raise ValueError(f"prior_first_steps: pi must lie in (0, 1), got {pi}")
    zeros = float(num_negative * num_classes + num_positive * (num_classes - 1))
    ones = float(num_positive)
    bias = torch.tensor(math.log(pi / (1 - pi)), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([bias], lr=lr, momentum=momentum)
    out: dict[str, list[float]] = {"loss": [], "bias": [], "p": []}
    for step in range(steps + 1):
        logit = bias.reshape(1)
        loss = (
            zeros * sigmoid_focal_loss(logit, torch.zeros(1, dtype=torch.float64), alpha=alpha, gamma=gamma)
            + ones * sigmoid_focal_loss(logit, torch.ones(1, dtype=torch.float64), alpha=alpha, gamma=gamma)
        ).sum() / num_positive
        out["loss"].append(float(loss.detach()))
        out["bias"].append(float(bias.detach()))
        out["p"].append(float(torch.sigmoid(bias.detach())))
        if step < steps:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return out
