"""retina_edu.boxes against torchvision.ops and float64 recomputations."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

import retina_edu.boxes
from retina_edu.boxes import (
    BoxCoder,
    box_area,
    box_iou,
    check_boxes,
    clip_boxes,
    convert_boxes,
)


def random_boxes(n, size=100.0, generator=None, min_wh=0.5):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size + min_wh
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_conversions_match_torchvision_and_round_trip(fmt):
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(50, generator=g)
    converted = convert_boxes(boxes, "xyxy", fmt)
    torch.testing.assert_close(converted, torchvision.ops.box_convert(boxes, "xyxy", fmt))
    torch.testing.assert_close(convert_boxes(converted, fmt, "xyxy"), boxes)


def test_convert_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown box format 'yxyx'"):
        convert_boxes(torch.zeros(1, 4), "yxyx", "xyxy")


def test_box_area_matches_torchvision():
    boxes = random_boxes(30, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(box_area(boxes), torchvision.ops.box_area(boxes))


@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (1, 1), (17, 33), (40, 5000)])  # the last in slices
def test_box_iou_matches_torchvision(n, m):
    g = torch.Generator().manual_seed(n * 100 + m)
    a, b = random_boxes(n, generator=g), random_boxes(m, generator=g)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))


def test_box_iou_degenerate_and_identical_boxes():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 5, 9], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    ours, ref = box_iou(a, b), torchvision.ops.box_iou(a, b)
    torch.testing.assert_close(ours, ref, equal_nan=True)
    assert ours[0, 0] == 1 and ours[0, 1] == 0


@pytest.mark.parametrize("chunk", [None, 50])  # 50: the result is filled in slices of b (one partial)
def test_box_iou_batched_equals_per_image(chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(retina_edu.boxes, "_IOU_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(3)
    a = torch.stack([random_boxes(7, generator=g) for _ in range(3)])
    b = torch.stack([random_boxes(11, generator=g) for _ in range(3)])
    batched = box_iou(a, b)
    for i in range(3):
        torch.testing.assert_close(batched[i], torchvision.ops.box_iou(a[i], b[i]))


def test_clip_boxes_matches_torchvision():
    boxes = random_boxes(40, size=150, generator=torch.Generator().manual_seed(4)) - 25
    torch.testing.assert_close(clip_boxes(boxes, (90, 120)), torchvision.ops.clip_boxes_to_image(boxes, (90, 120)))
    per_image = clip_boxes(boxes[None].repeat(2, 1, 1), torch.tensor([[90, 120], [50, 60]])[:, None, :])
    torch.testing.assert_close(per_image[1], torchvision.ops.clip_boxes_to_image(boxes, (50, 60)))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_matches_torchvision(weights):
    g = torch.Generator().manual_seed(5)
    anchors, boxes = random_boxes(64, generator=g), random_boxes(64, generator=g)
    ours, ref = BoxCoder(weights), TVBoxCoder(weights)
    torch.testing.assert_close(ours.encode(anchors, boxes), ref.encode_single(boxes, anchors))
    deltas = torch.randn(64, 4, generator=g)
    torch.testing.assert_close(ours.decode(anchors, deltas), ref.decode_single(deltas, anchors))


def test_decode_inverts_encode():
    # Widths from 5 to 105: every scale change stays inside the clip (62.5x), as for real anchors.
    g = torch.Generator().manual_seed(6)
    anchors = random_boxes(200, generator=g, min_wh=5).double()
    boxes = random_boxes(200, generator=g, min_wh=5).double()
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(anchors, coder.encode(anchors, boxes)), boxes)


def test_decode_inverts_encode_batched():
    g = torch.Generator().manual_seed(7)
    anchors = random_boxes(30, generator=g, min_wh=5).double()
    boxes = torch.stack([random_boxes(30, generator=g, min_wh=5).double() for _ in range(4)])
    coder = BoxCoder()
    deltas = coder.encode(anchors[None], boxes)
    assert deltas.shape == (4, 30, 4)
    torch.testing.assert_close(coder.decode(anchors[None], deltas), boxes)


def test_encode_is_the_faster_rcnn_parametrisation():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    box = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), 20 x 20
    deltas = BoxCoder().encode(anchor, box)[0]
    expected = torch.tensor([7 / 10, 4 / 20, math.log(20 / 10), math.log(20 / 20)])
    torch.testing.assert_close(deltas, expected)


def test_decode_clips_large_scale_changes():
    coder = BoxCoder()
    box = coder.decode(torch.tensor([[0.0, 0, 16, 16]]), torch.tensor([[0.0, 0, 100.0, 100.0]]))
    assert torch.isfinite(box).all()
    torch.testing.assert_close(box[0, 2] - box[0, 0], torch.tensor(1000.0))


@pytest.mark.parametrize(
    "boxes,message",
    [
        (torch.zeros(3, 5), r"shape \[N, 4\]"),
        ([[0, 0, 1, 1]], "must be a torch.Tensor"),
        (torch.zeros(2, 4, dtype=torch.long), "floating point"),
        (torch.tensor([[0.0, 0, 1, 1], [0, float("nan"), 1, 1]]), r"box \[1\] is not finite"),
    ],
)
def test_check_boxes_names_the_problem(boxes, message):
    with pytest.raises(ValueError, match=message):
        check_boxes(boxes, "gt_boxes")
