"""retina_edu.matching against torchvision's Matcher(0.5, 0.4, allow_low_quality_matches=True)."""

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import Matcher

from retina_edu.anchors import generate_anchors
from retina_edu.matching import BACKGROUND, IGNORE, AnchorLabels, label_anchors, match_anchors, pad_boxes


def random_gt(n, size=128, generator=None):
    xy = torch.rand(n, 2, generator=generator) * size * 0.8
    wh = torch.rand(n, 2, generator=generator) * size * 0.5 + 4
    return torch.cat([xy, xy + wh], dim=1)


def torchvision_matches(anchors, gt, fg=0.5, bg=0.4, low_quality=True):
    if gt.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.int64)
    return Matcher(fg, bg, low_quality)(torchvision.ops.box_iou(gt, anchors))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("low_quality", [True, False])
def test_matches_torchvision_matcher(seed, low_quality):
    g = torch.Generator().manual_seed(seed)
    anchors = generate_anchors((128, 128))
    gt = random_gt(1 + seed * 3, generator=g)
    expected = torchvision_matches(anchors, gt, low_quality=low_quality)
    assert torch.equal(match_anchors(anchors, gt, allow_low_quality=low_quality), expected)


def test_matches_torchvision_with_other_thresholds_and_tiny_boxes():
    anchors = generate_anchors((128, 128))
    gt = torch.tensor([[3.0, 3.0, 9.0, 8.0], [40.0, 40.0, 41.0, 41.0], [0.0, 0.0, 128.0, 128.0]])
    for fg, bg in [(0.5, 0.4), (0.6, 0.3), (0.5, 0.5)]:
        assert torch.equal(match_anchors(anchors, gt, fg, bg), torchvision_matches(anchors, gt, fg, bg))


def test_tiny_box_keeps_its_best_anchor_through_low_quality_matching():
    anchors = generate_anchors((128, 128))
    gt = torch.tensor([[40.0, 40.0, 48.0, 48.0]])  # 8 px: IoU with a 32 px anchor is at most 1/16
    assert (match_anchors(anchors, gt, allow_low_quality=False) >= 0).sum() == 0
    assert (match_anchors(anchors, gt, allow_low_quality=True) >= 0).sum() >= 1


def test_image_without_boxes_is_all_background():
    anchors = generate_anchors((64, 64))
    m = match_anchors(anchors, torch.zeros(0, 4))
    assert m.shape == (anchors.shape[0],) and (m == BACKGROUND).all()


def test_batched_matching_equals_per_image_with_padding():
    g = torch.Generator().manual_seed(11)
    anchors = generate_anchors((128, 128))
    per_image = [random_gt(3, generator=g), torch.zeros(0, 4), random_gt(7, generator=g), random_gt(1, generator=g)]
    boxes, mask, _ = pad_boxes(per_image)
    batched = match_anchors(anchors, boxes, gt_mask=mask)
    assert batched.shape == (4, anchors.shape[0])
    for i, gt in enumerate(per_image):
        assert torch.equal(batched[i], torchvision_matches(anchors, gt)), f"image {i}"


def test_ignore_band_is_labelled_minus_two():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 22], [50, 50, 60, 60]])
    gt = torch.tensor([[0.0, 0, 10, 10.0]])
    # IoUs: 1.0, 0.833, 0.4545, 0.0
    m = match_anchors(anchors, gt, allow_low_quality=False)
    assert m.tolist() == [0, 0, IGNORE, BACKGROUND]


def test_pad_boxes_shapes_and_labels():
    labels_in = [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long)]
    boxes, mask, labels = pad_boxes([torch.ones(2, 4), torch.zeros(0, 4)], labels_in)
    assert boxes.shape == (2, 2, 4) and mask.tolist() == [[True, True], [False, False]]
    assert labels.tolist() == [[3, 1], [0, 0]]


def random_targets(counts, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"boxes": random_gt(n, generator=g), "labels": torch.randint(0, num_classes, (n,), generator=g)} for n in counts
    ]


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("counts", [[3, 0, 7, 1], [0, 0], [1]])
def test_label_anchors_equals_torchvision_matcher_per_image(counts, low_quality):
    anchors = generate_anchors((128, 128))
    targets = random_targets(counts, seed=len(counts))
    labelled = label_anchors(anchors, targets, allow_low_quality=low_quality)
    assert isinstance(labelled, AnchorLabels)
    assert labelled.matches.shape == labelled.labels.shape == (len(counts), anchors.shape[0])
    assert labelled.boxes.shape == (len(counts), anchors.shape[0], 4)
    for i, t in enumerate(targets):
        matched = torchvision_matches(anchors, t["boxes"], low_quality=low_quality)
        fg = matched >= 0
        assert torch.equal(labelled.matches[i], matched), f"image {i}"
        # the class of the matched box for positives; the match code itself (-1 / -2) elsewhere
        expected_labels = matched.clone()
        expected_labels[fg] = t["labels"][matched[fg]]
        assert torch.equal(labelled.labels[i], expected_labels), f"image {i}"
        expected_boxes = torch.zeros(anchors.shape[0], 4)
        expected_boxes[fg] = t["boxes"][matched[fg]]
        assert torch.equal(labelled.boxes[i], expected_boxes), f"image {i}"
        assert torch.equal(labelled.positive[i], fg) and torch.equal(labelled.valid[i], matched != IGNORE)


def test_label_anchors_equals_pad_match_gather():
    # the three steps label_anchors names, written out as retinanet_loss used to
    anchors = generate_anchors((128, 128))
    targets = random_targets([2, 5, 0], seed=3)
    boxes, mask, labels = pad_boxes([t["boxes"] for t in targets], [t["labels"] for t in targets])
    matches = match_anchors(anchors, boxes, gt_mask=mask)
    index = matches.clamp(min=0)
    positive = matches >= 0
    labelled = label_anchors(anchors, targets)
    assert torch.equal(labelled.matches, matches)
    assert torch.equal(labelled.labels[positive], labels.gather(1, index)[positive])
    assert torch.equal(labelled.boxes[positive], boxes.gather(1, index[..., None].expand(-1, -1, 4))[positive])
    assert (labelled.labels[~positive] < 0).all() and (labelled.boxes[~positive] == 0).all()


def test_label_anchors_keeps_the_anchors_dtype_and_names_a_bad_target():
    anchors = generate_anchors((64, 64)).double()
    labelled = label_anchors(anchors, random_targets([2]))
    assert labelled.boxes.dtype == torch.float64 and labelled.labels.dtype == torch.int64
    with pytest.raises(ValueError, match="target 1"):
        label_anchors(anchors, [*random_targets([1]), {"boxes": torch.zeros(0, 4)}])


@pytest.mark.parametrize(
    "anchors,gt,kwargs,message",
    [
        (torch.zeros(5, 3), torch.zeros(1, 4), {}, r"anchors must have shape \[N, 4\]"),
        (torch.zeros(5, 4), torch.zeros(4), {}, "gt_boxes must have shape"),
        (torch.zeros(5, 4), torch.tensor([[0.0, 0, float("inf"), 1]]), {}, "not finite"),
        (torch.zeros(5, 4), torch.zeros(1, 4), {"fg_iou": 0.3, "bg_iou": 0.4}, "bg_iou <= fg_iou"),
    ],
)
def test_bad_input_raises_value_error(anchors, gt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        match_anchors(anchors, gt, **kwargs)
