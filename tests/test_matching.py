"""retina_edu.matching against torchvision's Matcher(0.5, 0.4, allow_low_quality_matches=True)."""

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import Matcher

from retina_edu.anchors import generate_anchors
from retina_edu.matching import BACKGROUND, IGNORE, match_anchors, pad_boxes


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
    boxes, mask, labels = pad_boxes([torch.ones(2, 4), torch.zeros(0, 4)], [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long)])
    assert boxes.shape == (2, 2, 4) and mask.tolist() == [[True, True], [False, False]]
    assert labels.tolist() == [[3, 1], [0, 0]]


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
