"""Tests of retina_edu.analysis: every number a figure draws, against a float64 / numpy / torchvision reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from retina_edu.analysis import (
    FIGURE4_GAMMAS,
    LOSS_GROUPS,
    anchor_grid,
    anchor_losses,
    best_iou,
    focal_loss_vs_pt,
    hardest_share,
    loss_cdf,
    loss_shares,
    match_counts,
)
from retina_edu.anchors import AnchorGenerator, anchors_per_level, generate_anchors
from retina_edu.matching import BACKGROUND, IGNORE, match_anchors


def _focal_float64(x: np.ndarray, t: np.ndarray, gamma: float, alpha: float | None) -> np.ndarray:
    """The paper's FL(p_t) = -α_t (1 - p_t)^γ log p_t, in numpy float64."""
    p = 1 / (1 + np.exp(-x))
    p_t = np.where(t > 0.5, p, 1 - p)
    alpha_t = 1.0 if alpha is None else np.where(t > 0.5, alpha, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


# ---------------------------------------------------------------------------------------------
# focal_loss_vs_pt, loss_shares
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, None), (0.5, 0.25), (2.0, None), (5.0, 0.75)])
def test_focal_loss_vs_pt_matches_the_closed_form(gamma: float, alpha: float | None) -> None:
    p = np.linspace(0.01, 0.99, 50)
    curves = focal_loss_vs_pt(p, gamma, alpha)
    a = 1.0 if alpha is None else alpha
    loss = -a * (1 - p) ** gamma * np.log(p)
    # d/dx of -α (1 - p)^γ log p with p = sigmoid(x), dp/dx = p (1 - p)
    grad = a * (1 - p) ** gamma * (gamma * p * np.log(p) - (1 - p))
    assert all(v.dtype == torch.float64 and v.shape == (50,) for v in curves.values())
    np.testing.assert_allclose(curves["loss"], loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(curves["grad"], grad, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(curves["ce"], -np.log(p))
    np.testing.assert_allclose(curves["factor"], (1 - p) ** gamma)
    np.testing.assert_allclose(curves["ce_grad"], p - 1)


def test_focal_loss_vs_pt_keeps_the_input_shape() -> None:
    assert focal_loss_vs_pt(torch.full((2, 3), 0.5), 2.0)["loss"].shape == (2, 3)


def test_focal_loss_vs_pt_rejects_probabilities_at_the_ends() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        focal_loss_vs_pt([0.0, 0.5], 2.0)


def test_loss_shares_sum_to_one_and_match_a_float64_sum(scored_anchors) -> None:
    logits, targets = scored_anchors
    shares = loss_shares(logits, targets, gamma=2.0, alpha=0.25)
    assert sum(shares[name] for name in LOSS_GROUPS) == pytest.approx(1.0)
    x, t = logits.double().numpy(), targets.double().numpy()
    loss = _focal_float64(x, t, 2.0, 0.25)
    positive = t > 0.5
    easy = ~positive & (1 / (1 + np.exp(x)) > 0.5)
    assert shares["total"] == pytest.approx(loss.sum(), rel=1e-5)
    assert shares["positives"] == pytest.approx(loss[positive].sum() / loss.sum(), rel=1e-5)
    assert shares["easy negatives"] == pytest.approx(loss[easy].sum() / loss.sum(), rel=1e-5)
    assert shares["hard negatives"] == pytest.approx(loss[~positive & ~easy].sum() / loss.sum(), rel=1e-4)
    assert shares["count: positives"] == int(positive.sum())
    assert shares["count: easy negatives"] == int(easy.sum())
    assert sum(shares[f"count: {name}"] for name in LOSS_GROUPS) == len(x)


def test_easy_negatives_share_falls_as_gamma_grows(scored_anchors) -> None:
    logits, targets = scored_anchors
    easy = [loss_shares(logits, targets, g)["easy negatives"] for g in (0.0, 0.5, 1.0, 2.0, 5.0)]
    assert all(a > b for a, b in zip(easy, easy[1:]))
    assert easy[0] > 0.5 and easy[3] < 0.2


def test_loss_shares_rejects_logits_and_targets_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="3 logits but 2 targets"):
        loss_shares(torch.zeros(3), torch.zeros(2), 2.0)


# ---------------------------------------------------------------------------------------------
# match_counts, best_iou, anchor_grid
# ---------------------------------------------------------------------------------------------
def test_match_counts_counts_positives_ignored_and_negatives() -> None:
    matches = torch.tensor([0, 1, BACKGROUND, IGNORE, BACKGROUND, 0])
    assert match_counts(matches) == {"positive": 3, "ignored": 1, "negative": 2}
    assert match_counts(matches.numpy()) == match_counts(matches.view(2, 3))


def test_match_counts_partition_the_anchors_of_match_anchors() -> None:
    anchors = generate_anchors((128, 128))
    gt = torch.tensor([[10.0, 12.0, 70.0, 60.0], [90.0, 90.0, 102.0, 101.0]])
    matches = match_anchors(anchors, gt)
    counts = match_counts(matches)
    assert sum(counts.values()) == len(anchors)
    assert counts["ignored"] == int(((matches != BACKGROUND) & (matches < 0)).sum())


def test_best_iou_is_torchvisions_column_maximum() -> None:
    anchors = generate_anchors((128, 128))
    gt = torch.tensor([[10.0, 12.0, 70.0, 60.0], [90.0, 90.0, 102.0, 101.0]])
    expected = tv_box_iou(gt.double(), anchors.double()).max(dim=0).values
    torch.testing.assert_close(best_iou(anchors, gt).double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(best_iou(anchors, torch.zeros(0, 4)), torch.zeros(len(anchors)))


@pytest.mark.parametrize(
    "generator",
    [
        None,
        AnchorGenerator(
            strides=(16, 32), sizes=((20, 30), (40, 60)), scales=None, aspect_ratios=(0.5, 1.0, 2.0), offset=0.5
        ),
    ],
)
def test_anchor_grid_picks_one_shape_of_the_generators_anchors(generator: AnchorGenerator | None) -> None:
    settings = generator or AnchorGenerator()
    image_size = (100, 140)
    per_level = anchors_per_level(
        image_size, settings.strides, settings.sizes, settings.scales, settings.aspect_ratios, settings.offset
    )
    num_scales, num_ratios = len(settings.level_sizes[0]), len(settings.aspect_ratios)
    for level, stride in enumerate(settings.strides):
        for scale_index in range(num_scales):
            ratio_index = num_ratios - 1
            grid = anchor_grid(image_size, level, scale_index, ratio_index, generator)
            assert grid.shape == (math.ceil(100 / stride), math.ceil(140 / stride), 4)
            expected = per_level[level].view(-1, num_scales * num_ratios, 4)[:, ratio_index * num_scales + scale_index]
            torch.testing.assert_close(grid.reshape(-1, 4), expected)


@pytest.mark.parametrize("index", [{"level": 5}, {"scale_index": 3}, {"ratio_index": -1}])
def test_anchor_grid_rejects_an_index_out_of_range(index: dict) -> None:
    args = {"level": 0, "scale_index": 0, "ratio_index": 0} | index
    with pytest.raises(ValueError, match="must be in"):
        anchor_grid((64, 64), **args)


# ---------------------------------------------------------------------------------------------
# Figure 4: anchor_losses, loss_cdf, hardest_share
# ---------------------------------------------------------------------------------------------
def test_anchor_losses_are_the_float64_focal_loss_per_anchor() -> None:
    g = torch.Generator().manual_seed(0)
    logits = {"positive": torch.randn(50, generator=g), "negative": torch.randn(400, 4, generator=g) - 4}
    losses = anchor_losses(logits)
    assert set(losses) == set(FIGURE4_GAMMAS)
    for gamma, by_group in losses.items():
        pos = _focal_float64(logits["positive"].double().numpy(), np.ones(50), gamma, None)
        neg = _focal_float64(logits["negative"].double().numpy(), np.zeros((400, 4)), gamma, None).sum(1)
        np.testing.assert_allclose(by_group["positive"].numpy(), pos, rtol=1e-10)
        np.testing.assert_allclose(by_group["negative"].numpy(), neg, rtol=1e-10)
    # (1 - p_t)^γ weighs the hard ones more: the hardest tenth's share grows with γ
    assert hardest_share(losses[2.0]["negative"]) > hardest_share(losses[0.0]["negative"])


def test_loss_cdf_is_the_sorted_cumulative_share_in_float64() -> None:
    losses = torch.rand(101, generator=torch.Generator().manual_seed(1)).float()
    fraction, cumulative = loss_cdf(losses)
    reference = np.cumsum(np.sort(losses.double().numpy())) / losses.double().numpy().sum()
    assert fraction.dtype == cumulative.dtype == torch.float64
    np.testing.assert_allclose(fraction.numpy(), np.arange(1, 102) / 101)
    np.testing.assert_allclose(cumulative.numpy(), reference, rtol=1e-12)
    assert cumulative[-1].item() == pytest.approx(1.0)


def test_loss_cdf_of_a_hand_computed_example() -> None:
    fraction, cumulative = loss_cdf(torch.tensor([3.0, 1.0, 0.0, 4.0, 2.0]))
    # sorted 0, 1, 2, 3, 4; cumulative sums 0, 1, 3, 6, 10; total 10
    assert fraction.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert cumulative.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.6, 1.0])


@pytest.mark.parametrize(
    "bad", [torch.tensor([]), torch.zeros(3), torch.tensor([1.0, -1.0]), torch.tensor([1.0, float("nan")])]
)
def test_loss_cdf_rejects_what_cannot_be_normalised(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="loss_cdf"):
        loss_cdf(bad)


def test_hardest_share_is_one_minus_the_cdf() -> None:
    losses = torch.tensor([3.0, 1.0, 0.0, 4.0, 2.0, 10.0, 0.5, 0.25, 7.0, 1.25])
    assert hardest_share(losses, 0.1) == pytest.approx(10 / 29)  # the largest of 10
    assert hardest_share(losses, 0.2) == pytest.approx(17 / 29)
    _, cumulative = loss_cdf(losses)
    assert hardest_share(losses, 0.3) == pytest.approx(1 - float(cumulative[6]))  # 7 easiest of 10
    assert hardest_share(losses, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fraction"):
        hardest_share(losses, 0.0)
