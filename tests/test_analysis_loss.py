"""Tests of the RetinaNet-loss numbers in retina_edu.analysis (notebook 04): box losses against closed
forms and torchvision, box targets against a per-image torchvision Matcher, the normalisers against
retinanet_loss and a float64 per-image reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from test_losses import make_batch  # the random batch the loss tests use (tests/ is on sys.path)
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher

from retina_edu.analysis import (
    box_losses_per_anchor,
    box_losses_vs_offset,
    loss_sums_per_image,
    normalise_loss,
    positive_box_targets,
    quadratic_share,
)
from retina_edu.losses import SMOOTH_L1_BETA, retinanet_loss


def _smooth_l1_numpy(x: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    if beta == 0:
        return np.abs(x), np.sign(x)
    inside = np.abs(x) < beta
    return np.where(inside, 0.5 * x**2 / beta, np.abs(x) - 0.5 * beta), np.where(inside, x / beta, np.sign(x))


@pytest.mark.parametrize("beta", [0.0, SMOOTH_L1_BETA, 0.5, 1.0])
def test_box_losses_vs_offset_match_the_closed_forms(beta):
    x = np.linspace(-1.5, 1.5, 301)
    x = x[np.abs(np.abs(x) - beta) > 1e-9]  # the kink at |x| = β has no single derivative
    curves = box_losses_vs_offset(x, beta)
    loss, grad = _smooth_l1_numpy(x, beta)
    np.testing.assert_allclose(curves["smooth_l1"].numpy(), loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(curves["l1"].numpy(), np.abs(x), rtol=1e-12, atol=1e-12)
    nonzero = x != 0
    np.testing.assert_allclose(curves["smooth_l1_grad"].numpy()[nonzero], grad[nonzero], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(curves["l1_grad"].numpy()[nonzero], np.sign(x)[nonzero])
    assert all(v.dtype == torch.float64 and v.shape == x.shape for v in curves.values())


def test_box_losses_vs_offset_giou_is_torchvisions_for_a_shifted_unit_square():
    x = torch.linspace(-2, 2, 81, dtype=torch.float64)
    unit = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64).expand(len(x), 4)
    shifted = unit + torch.stack([x, 0 * x, x, 0 * x], 1)
    expected = torchvision.ops.generalized_box_iou_loss(shifted, unit, reduction="none")
    torch.testing.assert_close(box_losses_vs_offset(x)["giou"], expected)
    # closed form: overlap 1 - |x| up to |x| = 1, then the gap counts against it (GIoU loss 2|x| / (1 + |x|))
    ax = x.abs()
    closed = torch.where(ax <= 1, 1 - (1 - ax) / (1 + ax), 2 * ax / (1 + ax))
    torch.testing.assert_close(box_losses_vs_offset(x)["giou"], closed)


def test_box_losses_vs_offset_rejects_negative_beta():
    with pytest.raises(ValueError, match="beta must be >= 0"):
        box_losses_vs_offset([0.1], -0.1)


@pytest.mark.parametrize("objects", [[3, 0, 5], [1], [0, 0]])
def test_positive_box_targets_match_a_per_image_torchvision_matcher(objects):
    _, _, anchors, targets = make_batch(objects)
    got = positive_box_targets(anchors, targets)
    coder, matcher = TVBoxCoder((1.0, 1.0, 1.0, 1.0)), Matcher(0.5, 0.4, True)
    deltas, images = [], []
    for i, t in enumerate(targets):
        if len(t["boxes"]) == 0:
            continue
        matched = matcher(torchvision.ops.box_iou(t["boxes"], anchors))
        fg = matched >= 0
        deltas.append(coder.encode_single(t["boxes"][matched[fg]], anchors[fg]))
        images.append(torch.full((int(fg.sum()),), i))
    expected = torch.cat(deltas) if deltas else torch.zeros(0, 4)
    torch.testing.assert_close(got["deltas"], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got["image"], torch.cat(images) if images else torch.zeros(0, dtype=torch.long))
    assert got["anchors"].shape == got["boxes"].shape == got["deltas"].shape


def test_box_losses_per_anchor_match_torchvision_losses():
    _, _, anchors, targets = make_batch([4, 2], seed=3)
    pos = positive_box_targets(anchors, targets)
    g = torch.Generator().manual_seed(0)
    pred = 0.2 * torch.randn(pos["deltas"].shape, generator=g, dtype=torch.float64)
    got = box_losses_per_anchor(pos["anchors"], pos["boxes"], pred)
    target = pos["deltas"].double()
    torch.testing.assert_close(
        got["l1"], torch.nn.functional.l1_loss(pred, target, reduction="none").sum(1), rtol=1e-6, atol=1e-6
    )
    expected_sl1 = torch.nn.functional.smooth_l1_loss(pred, target, beta=SMOOTH_L1_BETA, reduction="none").sum(1)
    torch.testing.assert_close(got["smooth_l1"], expected_sl1, rtol=1e-6, atol=1e-6)
    decoded = TVBoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(pred, pos["anchors"].double())
    expected_giou = torchvision.ops.generalized_box_iou_loss(decoded, pos["boxes"].double(), reduction="none")
    torch.testing.assert_close(got["giou"], expected_giou, rtol=1e-6, atol=1e-6)


def test_box_losses_per_anchor_of_the_anchor_itself_is_the_l1_norm_of_the_targets():
    _, _, anchors, targets = make_batch([3])
    pos = positive_box_targets(anchors, targets)
    got = box_losses_per_anchor(pos["anchors"], pos["boxes"])
    torch.testing.assert_close(got["l1"], pos["deltas"].double().abs().sum(1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        box_losses_per_anchor(pos["anchors"], pos["boxes"][:1])


def test_quadratic_share_counts_errors_strictly_inside_the_band():
    errors = torch.tensor([[-0.2, -0.11, 0.0, 0.05], [0.109, 0.11, 0.3, -0.05]])
    assert quadratic_share(errors, 0.11) == pytest.approx(np.mean(np.abs(errors.double().numpy()) < 0.11))
    assert quadratic_share(errors, 0.0) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        quadratic_share(torch.zeros(0), 0.11)


@pytest.mark.parametrize("objects", [[3, 0, 5, 1], [1], [0, 0], [6, 1]])
@pytest.mark.parametrize("normalize", ["batch", "image"])
@pytest.mark.parametrize("box,beta", [("smooth_l1", SMOOTH_L1_BETA), ("l1", 0.0), ("giou", 0.0)])
def test_normalised_sums_equal_retinanet_loss(objects, normalize, box, beta):
    cls_logits, box_deltas, anchors, targets = make_batch(objects)
    sums = loss_sums_per_image(cls_logits, box_deltas, anchors, targets, box_loss=box, beta=beta)
    got = normalise_loss(sums, normalize)
    expected = retinanet_loss(cls_logits, box_deltas, anchors, targets, normalize=normalize, box_loss=box, beta=beta)
    assert got["classification"] == pytest.approx(expected["classification"].item(), rel=1e-5, abs=1e-6)
    assert got["bbox_regression"] == pytest.approx(expected["bbox_regression"].item(), rel=1e-5, abs=1e-6)
    assert float(got["per_image"].sum()) == pytest.approx(got["classification"] + got["bbox_regression"], rel=1e-12)


def test_loss_sums_per_image_match_a_float64_per_image_reference():
    cls_logits, box_deltas, anchors, targets = make_batch([2, 0, 4])
    sums = loss_sums_per_image(cls_logits, box_deltas, anchors, targets)
    coder, matcher = TVBoxCoder((1.0, 1.0, 1.0, 1.0)), Matcher(0.5, 0.4, True)
    for i, (logits, deltas, t) in enumerate(zip(cls_logits.double(), box_deltas.double(), targets)):
        if len(t["boxes"]) == 0:
            matched = torch.full((anchors.shape[0],), -1)
        else:
            matched = matcher(torchvision.ops.box_iou(t["boxes"], anchors))
        fg, valid = matched >= 0, matched != -2
        y = torch.zeros_like(logits)
        y[fg, t["labels"][matched[fg]]] = 1.0
        cls = torchvision.ops.sigmoid_focal_loss(logits[valid], y[valid], reduction="sum")
        enc = coder.encode_single(t["boxes"][matched[fg]].double(), anchors[fg].double())
        box = torch.nn.functional.smooth_l1_loss(deltas[fg], enc, beta=SMOOTH_L1_BETA, reduction="sum")
        assert sums["classification"][i].item() == pytest.approx(cls.item(), rel=1e-9)
        assert sums["bbox_regression"][i].item() == pytest.approx(box.item(), rel=1e-6, abs=1e-9)
        assert int(sums["positives"][i]) == int(fg.sum())
        assert int(sums["ignored"][i]) == int((~valid).sum())
        assert int(sums["negatives"][i]) == int((matched == -1).sum())


def test_normalisers_weigh_images_as_documented():
    sums = {
        "classification": torch.tensor([10.0, 2.0, 1.0], dtype=torch.float64),
        "bbox_regression": torch.tensor([5.0, 1.0, 0.0], dtype=torch.float64),
        "positives": torch.tensor([100, 4, 0]),
    }
    batch, image = normalise_loss(sums, "batch"), normalise_loss(sums, "image")
    torch.testing.assert_close(batch["weight"], torch.full((3,), 1 / 104, dtype=torch.float64))
    torch.testing.assert_close(image["weight"], torch.tensor([1 / 300, 1 / 12, 1 / 3], dtype=torch.float64))
    assert batch["classification"] == pytest.approx(13 / 104)
    assert image["bbox_regression"] == pytest.approx((5 / 100 + 1 / 4) / 3)
    with pytest.raises(ValueError, match="normalize must be"):
        normalise_loss(sums, "anchor")


def test_loss_sums_per_image_rejects_unknown_box_loss():
    cls_logits, box_deltas, anchors, targets = make_batch([1])
    with pytest.raises(ValueError, match="box_loss must be"):
        loss_sums_per_image(cls_logits, box_deltas, anchors, targets, box_loss="l2")
