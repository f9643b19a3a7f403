"""Tests of the numbers behind notebooks 03, 05 and 06's widgets (retina_edu.analysis, appended part):
both sides of the focal loss, the made-up batch, the prior's first loss and first steps, which level
a box is assigned to, and the shapes through the network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from retina_edu.analysis import (
    ILLUSTRATIVE_NEGATIVES_PER_POSITIVE,
    box_level_assignment,
    focal_loss_both_sides,
    illustrative_batch,
    loss_shares,
    network_shapes,
    prior_first_steps,
    prior_initial_loss,
)
from retina_edu.anchors import generate_anchors
from retina_edu.boxes import box_iou
from retina_edu.losses import retinanet_loss
from retina_edu.matching import match_anchors
from retina_edu.model import RetinaNet, prior_bias


# ---------------------------------------------------------------------------------------------
# focal loss, both sides (notebook 03)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [None, 0.25, 0.75])
def test_both_sides_match_torchvision_with_targets_one_and_zero(alpha: float | None) -> None:
    p = torch.tensor([0.01, 0.3, 0.5, 0.9, 0.999], dtype=torch.float64)
    sides = focal_loss_both_sides(p, 2.0, alpha)
    a = -1 if alpha is None else alpha
    pos = torchvision.ops.sigmoid_focal_loss(torch.logit(p), torch.ones_like(p), alpha=a, gamma=2.0)
    neg = torchvision.ops.sigmoid_focal_loss(-torch.logit(p), torch.zeros_like(p), alpha=a, gamma=2.0)
    torch.testing.assert_close(sides["positive"], pos)
    torch.testing.assert_close(sides["negative"], neg)


def test_alpha_weighs_a_negative_by_one_minus_alpha_and_flips_its_gradient() -> None:
    p = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    sides = focal_loss_both_sides(p, 2.0, 0.25)
    torch.testing.assert_close(sides["negative"], 3 * sides["positive"])
    torch.testing.assert_close(sides["negative_grad"], -3 * sides["positive_grad"])
    none = focal_loss_both_sides(p, 2.0, None)
    torch.testing.assert_close(none["negative"], none["positive"])
    assert bool((sides["positive_grad"] < 0).all()) and bool((sides["negative_grad"] > 0).all())


def test_both_sides_rejects_probabilities_outside_0_1() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        focal_loss_both_sides([0.0, 0.5], 2.0)


def test_illustrative_batch_has_500_negatives_per_positive_and_easy_negatives_dominate_ce() -> None:
    logits, targets = illustrative_batch(num_positive=200)
    assert len(logits) == 200 * (1 + ILLUSTRATIVE_NEGATIVES_PER_POSITIVE) and int(targets.sum()) == 200
    ce, fl = loss_shares(logits, targets, 0.0), loss_shares(logits, targets, 2.0)
    assert ce["easy negatives"] > 0.5 and fl["easy negatives"] < ce["easy negatives"] / 3  # as in notebook 03
    torch.testing.assert_close(illustrative_batch(200)[0], logits)  # seeded
    with pytest.raises(ValueError, match="num_positive"):
        illustrative_batch(0)


# ---------------------------------------------------------------------------------------------
# the prior (notebook 06)
# ---------------------------------------------------------------------------------------------
def _batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], torch.Tensor]:
    anchors = generate_anchors((128, 128))
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 64.0, 120.0, 126.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[30.0, 20.0, 100.0, 90.0]]), "labels": torch.tensor([1])},
    ]
    return anchors, targets, torch.zeros(1)


@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, None), (2.0, 0.25)])
@pytest.mark.parametrize("pi", [0.01, 0.5])
def test_initial_loss_is_the_retinanet_loss_of_constant_logits(pi: float, gamma: float, alpha: float | None) -> None:
    anchors, targets, _ = _batch()
    K = 3
    gt = torch.nn.utils.rnn.pad_sequence([t["boxes"] for t in targets], batch_first=True)
    mask = torch.tensor([[True, True], [True, False]])
    matches = match_anchors(anchors, gt, gt_mask=mask)
    P, N = int((matches >= 0).sum()), int((matches == -1).sum())
    logits = torch.full((2, len(anchors), K), prior_bias(pi), dtype=torch.float64)
    deltas = torch.zeros(2, len(anchors), 4, dtype=torch.float64)
    measured = retinanet_loss(logits, deltas, anchors.double(), targets, gamma=gamma, alpha=alpha)["classification"]
    assert prior_initial_loss(pi, P, N, K, gamma, alpha)["total"] == pytest.approx(float(measured), rel=1e-6)


def test_initial_loss_parts_add_up_and_bias_0_is_dominated_by_background() -> None:
    out = prior_initial_loss(0.5, 100, 50_000, 4, 0.0, None)
    assert out["total"] == pytest.approx(out["background"] + out["objects"])
    assert out["objects"] == pytest.approx(math.log(2)) and out["background"] > 100 * out["objects"]
    with pytest.raises(ValueError, match="pi"):
        prior_initial_loss(1.0, 100, 10, 4)
    with pytest.raises(ValueError, match="num_positive"):
        prior_initial_loss(0.01, 0, 10, 4)


def test_first_steps_start_at_the_prior_and_the_first_loss() -> None:
    run = prior_first_steps(0.01, 100, 50_000, 4, gamma=2.0, alpha=0.25, steps=3)
    assert len(run["loss"]) == 4 and run["p"][0] == pytest.approx(0.01)
    assert run["bias"][0] == pytest.approx(prior_bias())
    assert run["loss"][0] == pytest.approx(prior_initial_loss(0.01, 100, 50_000, 4)["total"])


def test_first_step_from_bias_0_is_large_and_from_the_prior_small() -> None:
    for gamma, alpha in ((0.0, None), (2.0, 0.25)):
        zero = prior_first_steps(0.5, 1559, 192_307, 4, gamma=gamma, alpha=alpha, steps=1)
        prior = prior_first_steps(0.01, 1559, 192_307, 4, gamma=gamma, alpha=alpha, steps=1)
        assert zero["bias"][1] - zero["bias"][0] < -1
        assert abs(prior["bias"][1] - prior["bias"][0]) < 0.1


def test_first_step_is_sgd_on_the_closed_form_gradient() -> None:
    # CE: d loss / d b = [(NK + P(K-1)) p - P (1 - p)] / P; the first SGD step (momentum buffer empty) is -lr * grad
    P, N, K, pi = 100, 5_000, 4, 0.2
    run = prior_first_steps(pi, P, N, K, gamma=0.0, alpha=None, steps=1, lr=0.01)
    grad = ((N * K + P * (K - 1)) * pi - P * (1 - pi)) / P
    assert run["bias"][1] - run["bias"][0] == pytest.approx(-0.01 * grad)


# ---------------------------------------------------------------------------------------------
# which level a box is assigned to (notebook 05)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "level"), [(32, 0), (64, 1), (128, 2), (256, 3), (512, 4)])
def test_a_box_of_a_base_size_goes_to_its_level_with_iou_1(size: int, level: int) -> None:
    r = box_level_assignment(size)
    assert r["level"] == level and r["best_iou"][level] == pytest.approx(1.0)
    assert r["positives"][level] > 0


def test_best_iou_per_level_matches_a_brute_force_search() -> None:
    from retina_edu.anchors import anchors_per_level

    r = box_level_assignment(75.0, aspect=2.0, center=(200.0, 300.0))
    w, h = 75 / math.sqrt(2), 75 * math.sqrt(2)
    box = torch.tensor(r["box"])
    torch.testing.assert_close(box, torch.tensor([200 - w / 2, 300 - h / 2, 200 + w / 2, 300 + h / 2]))
    for k, anchors in enumerate(anchors_per_level((512, 512))):
        best = float(box_iou(anchors, box[None]).max())
        assert r["best_iou"][k] == pytest.approx(best)
        assert float(box_iou(torch.tensor([r["best_anchor"][k]]), box[None])) == pytest.approx(best)
    assert r["level"] == int(np.argmax(r["best_iou"]))


def test_a_tiny_box_still_gets_its_best_anchor_as_a_low_quality_positive() -> None:
    r = box_level_assignment(12.0)
    assert max(r["best_iou"]) < 0.5 and sum(r["positives"]) >= 1 and r["level"] == 0


def test_box_level_assignment_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        box_level_assignment(0.0)
    with pytest.raises(ValueError, match="positive"):
        box_level_assignment(10.0, aspect=-1.0)


# ---------------------------------------------------------------------------------------------
# shapes through the network (notebook 05)
# ---------------------------------------------------------------------------------------------
def test_network_shapes_are_those_of_the_real_forward_pass() -> None:
    model = RetinaNet(3, backbone="resnet18", fpn_channels=32, head_convs=1).train()
    shapes = network_shapes(model, (96, 160))
    assert model.training  # put back as it was
    assert shapes["input"] == [1, 3, 96, 160]
    assert [s[2:] for s in shapes["P"]] == [[math.ceil(96 / 2**l), math.ceil(160 / 2**l)] for l in range(3, 8)]
    assert [s[1] for s in shapes["C"]] == [128, 256, 512] and all(s[1] == 32 for s in shapes["P"])
    assert all(s[1] == 9 * 3 for s in shapes["class_raw"]) and all(s[1] == 36 for s in shapes["box_raw"])
    with torch.no_grad():
        out = model.eval().head_outputs(torch.zeros(1, 3, 96, 160))
    assert shapes["class"] == list(out.cls_logits.shape) and shapes["box"] == list(out.box_deltas.shape)
    assert not model.class_subnet.out._forward_hooks  # hooks removed
