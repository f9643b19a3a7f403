"""retina_edu.losses against torchvision (values and gradients) and a slow per-image reference."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher

import retina_edu.losses
from retina_edu.anchors import generate_anchors
from retina_edu.losses import (
    binary_cross_entropy,
    focal_loss_per_image,
    giou_loss,
    ohem_classification_loss,
    retinanet_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_focal_loss,
    validate_targets,
)
from retina_edu.matching import label_anchors


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.0, 1.0, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_loss_values_and_gradients_match_torchvision(alpha, gamma, reduction):
    g = torch.Generator().manual_seed(int(gamma * 10 + alpha * 100 + 7))
    logits = (torch.randn(6, 50, generator=g) * 4).requires_grad_()
    targets = (torch.rand(6, 50, generator=g) < 0.1).float()
    ref_logits = logits.detach().clone().requires_grad_()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    ref = torchvision.ops.sigmoid_focal_loss(ref_logits, targets, alpha, gamma, reduction)
    torch.testing.assert_close(ours, ref)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_alpha_none_equals_negative_alpha():
    logits, targets = torch.randn(100), (torch.rand(100) < 0.5).float()
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, None), sigmoid_focal_loss(logits, targets, -1))


def test_gamma_zero_is_cross_entropy():
    logits, targets = torch.randn(100), (torch.rand(100) < 0.5).float()
    torch.testing.assert_close(
        binary_cross_entropy(logits, targets), F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_logits_give_finite_values_and_gradients(gamma, dtype):
    logits = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0] * 2, dtype=dtype).requires_grad_()
    targets = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1.0], dtype=dtype)
    loss = sigmoid_focal_loss(logits, targets, gamma=gamma, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # A confident mistake keeps a large loss and a gradient pointing the right way.
    assert logits.grad[4] > 0 and logits.grad[5] < 0


def test_half_precision_sum_over_many_anchors_does_not_overflow():
    logits = torch.zeros(200_000, dtype=torch.float16)
    loss = sigmoid_focal_loss(logits, torch.ones_like(logits), alpha=None, gamma=0.0, reduction="sum")
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 65504


def test_focal_loss_downweights_easy_examples_as_the_paper_says():
    # p_t = 0.9 -> 100x smaller than CE; p_t = 0.968 -> about 1000x smaller (gamma = 2).
    for p_t, factor in [(0.9, 100), (0.968, 1000)]:
        logit = torch.tensor([math.log(p_t / (1 - p_t))])
        ce = binary_cross_entropy(logit, torch.ones(1))
        fl = sigmoid_focal_loss(logit, torch.ones(1), alpha=None, gamma=2.0)
        assert abs((ce / fl).item() / factor - 1) < 0.03


def test_softmax_focal_loss_gamma_zero_is_cross_entropy_and_matches_a_formula():
    g = torch.Generator().manual_seed(2)
    logits, targets = torch.randn(20, 5, generator=g), torch.randint(0, 5, (20,), generator=g)
    weights = torch.rand(5, generator=g)
    torch.testing.assert_close(
        softmax_focal_loss(logits, targets, weights, gamma=0.0),
        F.cross_entropy(logits, targets, weight=weights, reduction="none"),
    )
    p_t = logits.double().softmax(1).gather(1, targets[:, None])[:, 0]
    expected = -((1 - p_t) ** 2) * torch.log(p_t)
    torch.testing.assert_close(softmax_focal_loss(logits.double(), targets, gamma=2.0), expected)


@pytest.mark.parametrize("beta", [0.0, 0.11, 1.0])
def test_smooth_l1_matches_torch(beta):
    a, b = torch.randn(50, 4), torch.randn(50, 4)
    ref = F.l1_loss(a, b, reduction="sum") if beta == 0 else F.smooth_l1_loss(a, b, beta=beta, reduction="sum")
    torch.testing.assert_close(smooth_l1_loss(a, b, beta), ref)


def test_giou_loss_matches_torchvision():
    g = torch.Generator().manual_seed(3)
    xy1, xy2 = torch.rand(30, 2, generator=g) * 50, torch.rand(30, 2, generator=g) * 50
    a = torch.cat([xy1, xy1 + 1 + torch.rand(30, 2, generator=g) * 40], 1)
    b = torch.cat([xy2, xy2 + 1 + torch.rand(30, 2, generator=g) * 40], 1)
    torch.testing.assert_close(giou_loss(a, b), torchvision.ops.generalized_box_iou_loss(a, b, reduction="sum"))


# ---------------------------------------------------------------------------------------------
# retinanet_loss against a slow, per-image reference written from the paper
# ---------------------------------------------------------------------------------------------
def reference_loss(cls_logits, box_deltas, anchors, targets, normalize="batch", box="smooth_l1", beta=0.11):
    """One image at a time, torchvision's Matcher and BoxCoder, as torchvision's compute_loss."""
    coder, matcher = TVBoxCoder((1.0, 1.0, 1.0, 1.0)), Matcher(0.5, 0.4, True)
    cls_sums, box_sums, positives = [], [], []
    for logits, deltas, t in zip(cls_logits, box_deltas, targets):
        if t["boxes"].numel() == 0:
            matched = torch.full((anchors.shape[0],), -1)
        else:
            matched = matcher(torchvision.ops.box_iou(t["boxes"], anchors))
        fg = matched >= 0
        target = torch.zeros_like(logits)
        target[fg, t["labels"][matched[fg]]] = 1.0
        valid = matched != -2
        cls_sums.append(torchvision.ops.sigmoid_focal_loss(logits[valid], target[valid], reduction="sum"))
        gt = t["boxes"][matched[fg]]
        if box == "giou":
            decoded = coder.decode_single(deltas[fg], anchors[fg])
            box_sums.append(torchvision.ops.generalized_box_iou_loss(decoded, gt, reduction="sum"))
        else:
            enc = coder.encode_single(gt, anchors[fg])
            if beta == 0:
                loss = F.l1_loss(deltas[fg], enc, reduction="sum")
            else:
                loss = F.smooth_l1_loss(deltas[fg], enc, beta=beta, reduction="sum")
            box_sums.append(loss)
        positives.append(int(fg.sum()))
    if normalize == "batch":
        n = max(1, sum(positives))
        return sum(cls_sums) / n, sum(box_sums) / n
    return (
        sum(c / max(1, p) for c, p in zip(cls_sums, positives)) / len(targets),
        sum(b / max(1, p) for b, p in zip(box_sums, positives)) / len(targets),
    )


def make_batch(objects_per_image, num_classes=3, size=128, seed=0):
    """``(cls_logits [B, A, K], box_deltas [B, A, 4], anchors [A, 4], targets)`` of random boxes on a
    ``size``-pixel image, ``objects_per_image[i]`` in image i (also used by test_analysis_loss)."""
    g = torch.Generator().manual_seed(seed)
    anchors = generate_anchors((size, size))
    targets = []
    for n in objects_per_image:
        xy = torch.rand(n, 2, generator=g) * size * 0.7
        wh = torch.rand(n, 2, generator=g) * size * 0.4 + 6
        labels = torch.randint(0, num_classes, (n,), generator=g)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": labels})
    b = len(objects_per_image)
    cls_logits = torch.randn(b, anchors.shape[0], num_classes, generator=g) - 3
    box_deltas = torch.randn(b, anchors.shape[0], 4, generator=g) * 0.3
    return cls_logits, box_deltas, anchors, targets


@pytest.mark.parametrize("objects", [[0], [1], [3, 0, 5, 1], [0, 0]])
@pytest.mark.parametrize("normalize", ["batch", "image"])
@pytest.mark.parametrize("box,beta", [("smooth_l1", 0.11), ("l1", 0.0), ("giou", 0.0)])
def test_retinanet_loss_matches_per_image_reference(objects, normalize, box, beta):
    cls_logits, box_deltas, anchors, targets = make_batch(objects)
    ours = retinanet_loss(cls_logits, box_deltas, anchors, targets, normalize=normalize, box_loss=box, beta=beta)
    ref_cls, ref_box = reference_loss(cls_logits, box_deltas, anchors, targets, normalize, box, beta)
    torch.testing.assert_close(ours["classification"], torch.as_tensor(ref_cls), rtol=1e-5, atol=1e-6)
    ref_box = torch.as_tensor(ref_box, dtype=torch.float32)
    torch.testing.assert_close(ours["bbox_regression"], ref_box, rtol=1e-5, atol=1e-6)


def test_retinanet_loss_gradients_match_reference():
    cls_logits, box_deltas, anchors, targets = make_batch([2, 0, 4])
    a = [cls_logits.clone().requires_grad_(), box_deltas.clone().requires_grad_()]
    b = [cls_logits.clone().requires_grad_(), box_deltas.clone().requires_grad_()]
    sum(retinanet_loss(a[0], a[1], anchors, targets).values()).backward()
    sum(reference_loss(b[0], b[1], anchors, targets)).backward()
    torch.testing.assert_close(a[0].grad, b[0].grad)
    torch.testing.assert_close(a[1].grad, b[1].grad)


def test_image_without_objects_has_zero_box_loss_and_finite_class_loss():
    cls_logits, box_deltas, anchors, targets = make_batch([0])
    out = retinanet_loss(cls_logits, box_deltas, anchors, targets)
    assert out["bbox_regression"] == 0 and torch.isfinite(out["classification"]) and out["classification"] > 0


def test_loss_at_prior_init_is_what_the_formula_predicts():
    # All logits at b = -log(99): every negative costs -(1-a) p^2 log(1-p) with p = 0.01.
    cls_logits, box_deltas, anchors, targets = make_batch([0, 0], num_classes=4)
    cls_logits = torch.full_like(cls_logits, -math.log(99))
    out = retinanet_loss(cls_logits, box_deltas, anchors, targets)
    p = 0.01
    expected = cls_logits.numel() * 0.75 * p**2 * -math.log(1 - p)
    assert abs(out["classification"].item() - expected) / expected < 1e-4


@pytest.mark.parametrize(
    "targets,message",
    [
        (
            [{"boxes": torch.tensor([[5.0, 5, 3, 9]]), "labels": torch.tensor([0])}],
            r"target 0: box 0 \[5.0, 5.0, 3.0, 9.0\] has x2 <= x1",
        ),
        ([{"boxes": torch.tensor([[5.0, 5, 9, 5]]), "labels": torch.tensor([0])}], "y2 <= y1"),
        ([{"boxes": torch.tensor([[5.0, 5, float("nan"), 9]]), "labels": torch.tensor([0])}], "not finite"),
        ([{"boxes": torch.tensor([[5.0, 5, 9, 9]]), "labels": torch.tensor([3])}], "label 3, outside"),
        ([{"boxes": torch.tensor([[5.0, 5, 9, 9]])}], "no 'labels' key"),
        ([{"boxes": torch.zeros(2, 4), "labels": torch.zeros(3, dtype=torch.long)}], "one per box"),
    ],
)
def test_bad_targets_raise_value_error_naming_image_and_box(targets, message):
    with pytest.raises(ValueError, match=message):
        validate_targets(targets, num_classes=3)


@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [None, 40])  # 40 entries: many chunks of 10 rows (and a partial one)
def test_fast_focal_loss_per_image_equals_the_plain_formula(alpha, gamma, dtype, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(retina_edu.losses, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(int(gamma * 10) + (alpha is None))
    logits = torch.randn(3, 500, 4, generator=g, dtype=dtype) * 3 - 2
    labels = torch.where(torch.rand(3, 500, generator=g) < 0.05, torch.randint(0, 4, (3, 500), generator=g), -1)
    valid = torch.rand(3, 500, generator=g) > 0.1
    valid |= labels >= 0
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fast = focal_loss_per_image(a, labels, valid, alpha, gamma)
    targets = F.one_hot(labels.clamp(min=0), 4).to(dtype) * (labels >= 0)[..., None]
    plain = (sigmoid_focal_loss(b, targets, alpha, gamma) * valid[..., None]).sum((1, 2))
    torch.testing.assert_close(fast, plain)
    weights = torch.rand(3, generator=g, dtype=dtype)  # a different upstream gradient per image
    (fast * weights).sum().backward()
    (plain * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------------------------------------
# OHEM (Table 1d) against a float64 reference over torchvision's Matcher
# ---------------------------------------------------------------------------------------------
def reference_ohem(cls_logits, anchors, targets, ratio):
    """Per image: torchvision's Matcher, CE summed over classes; then the batch's hardest negatives."""
    matcher = Matcher(0.5, 0.4, True)
    pos_losses, neg_losses = [], []
    for logits, t in zip(cls_logits.double(), targets):
        matched = (
            matcher(torchvision.ops.box_iou(t["boxes"], anchors))
            if len(t["boxes"])
            else torch.full((anchors.shape[0],), -1)
        )
        target = torch.zeros_like(logits)
        fg = matched >= 0
        target[fg, t["labels"][matched[fg]]] = 1.0
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
        pos_losses.append(ce[fg])
        neg_losses.append(ce[matched == -1])
    pos, neg = torch.cat(pos_losses), torch.cat(neg_losses)
    k = min(ratio * max(len(pos), 1), len(neg))
    return (pos.sum() + neg.sort(descending=True).values[:k].sum()) / max(len(pos), 1)


@pytest.mark.parametrize("objects", [[3, 0, 5, 1], [0, 0], [2]])
@pytest.mark.parametrize("ratio", [3, 1])
def test_ohem_loss_is_ce_on_positives_and_the_hardest_negatives(objects, ratio):
    cls_logits, _, anchors, targets = make_batch(objects, seed=len(objects) + ratio)
    ours = ohem_classification_loss(cls_logits, label_anchors(anchors, targets), neg_pos_ratio=ratio)
    expected = reference_ohem(cls_logits, anchors, targets, ratio)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)


def test_ohem_loss_never_counts_ignored_anchors_and_checks_shapes():
    cls_logits, _, anchors, targets = make_batch([4], seed=5)
    labelled = label_anchors(anchors, targets)
    ignored = labelled.matches == -2
    assert ignored.any()
    huge = cls_logits.masked_fill(ignored[..., None], 50.0)  # an ignored anchor would be the hardest negative
    torch.testing.assert_close(ohem_classification_loss(huge, labelled), ohem_classification_loss(cls_logits, labelled))
    with pytest.raises(ValueError, match="must agree"):
        ohem_classification_loss(cls_logits[:, :10], labelled)
