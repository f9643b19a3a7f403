"""retina_edu.anchors against a float64 recomputation of the paper's formula and torchvision."""

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retina_edu.anchors import (
    PAPER_ANCHOR_SIZES,
    PAPER_ASPECT_RATIOS,
    PAPER_SCALES,
    PAPER_STRIDES,
    AnchorGenerator,
    anchors_per_level,
    cell_anchors,
    feature_map_sizes,
    generate_anchors,
    torchvision_anchor_sizes,
)


def paper_anchors_float64(image_size, offset=0.0):
    """The paper's anchors written out with Python floats, one at a time."""
    out = []
    for stride, size in zip(PAPER_STRIDES, PAPER_ANCHOR_SIZES):
        gh, gw = math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)
        for y in range(gh):
            for x in range(gw):
                cx, cy = (x + offset) * stride, (y + offset) * stride
                for ratio in PAPER_ASPECT_RATIOS:
                    for scale in PAPER_SCALES:
                        s = size * scale
                        w, h = s / math.sqrt(ratio), s * math.sqrt(ratio)
                        out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_anchors_match_float64_recomputation(offset):
    ours = generate_anchors((256, 192), offset=offset, dtype=torch.float64)
    torch.testing.assert_close(ours, paper_anchors_float64((256, 192), offset), rtol=0, atol=1e-9)


def test_anchor_counts_per_level_for_512_and_800x1024():
    assert [a.shape[0] for a in anchors_per_level((512, 512))] == [
        64 * 64 * 9,
        32 * 32 * 9,
        16 * 16 * 9,
        8 * 8 * 9,
        4 * 4 * 9,
    ]
    assert generate_anchors((512, 512)).shape == (49104, 4)
    assert feature_map_sizes((800, 1024)) == [(100, 128), (50, 64), (25, 32), (13, 16), (7, 8)]
    assert generate_anchors((800, 1024)).shape[0] == 9 * (100 * 128 + 50 * 64 + 25 * 32 + 13 * 16 + 7 * 8)


def test_anchor_areas_and_ratios_follow_the_paper():
    base = cell_anchors([32 * s for s in PAPER_SCALES], PAPER_ASPECT_RATIOS, dtype=torch.float64)
    w, h = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    sizes = torch.tensor([32 * s for s in PAPER_SCALES] * 3, dtype=torch.float64)
    torch.testing.assert_close(w * h, sizes**2)  # area = size², whatever the ratio
    torch.testing.assert_close(h / w, torch.tensor([0.5] * 3 + [1.0] * 3 + [2.0] * 3, dtype=torch.float64))
    assert abs(sizes[1].item() - 40.3175) < 1e-3  # exact, not torchvision's 40


def test_largest_anchor_is_813_pixels():
    assert round(512 * 2 ** (2 / 3)) == 813
    base = cell_anchors([512 * s for s in PAPER_SCALES], [1.0])
    assert round(float(base[-1, 2] - base[-1, 0])) == 813


def test_torchvision_convention_reproduces_torchvision_anchors():
    image = torch.zeros(1, 3, 800, 1088)
    grids = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    tv = TVAnchorGenerator(torchvision_anchor_sizes(), ((0.5, 1.0, 2.0),) * 5)
    expected = tv(ImageList(image, [(800, 1088)]), feats)[0]
    ours = generate_anchors(
        (800, 1088),
        sizes=torchvision_anchor_sizes(),
        scales=None,
        round_base=True,
        grid_sizes=grids,
        strides_from_grid=True,
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_torchvision_sizes_are_truncated():
    assert torchvision_anchor_sizes()[0] == (32, 40, 50)
    assert torchvision_anchor_sizes()[4] == (512, 645, 812)


def test_generator_caches_per_size():
    gen = AnchorGenerator()
    a = gen((256, 256))
    assert gen((256, 256)) is a
    b = gen((128, 256))
    assert b is not a and b.shape[0] == 9 * (16 * 32 + 8 * 16 + 4 * 8 + 2 * 4 + 1 * 2)
    assert gen.num_anchors_per_location == 9
    assert gen.num_anchors_per_level((256, 256)) == [a.shape[0] for a in anchors_per_level((256, 256))]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(image_size=(0, 10)), "positive sides"),
        (dict(image_size=(64, 64), sizes=(32, 64)), "2 anchor sizes for 5 strides"),
        (dict(image_size=(64, 64), sizes=((32,), (64,), (128,), (256,), (512,)), scales=(1.0,)), "scales=None"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_anchors(**kwargs)


# -- anchors fitted to a dataset (notebook 11) ------------------------------------------------------


def _random_dataset(seed=0, num_images=4):
    g = torch.Generator().manual_seed(seed)
    boxes, sizes = [], []
    for i in range(num_images):
        h, w = 96 + 32 * i, 128
        n = 6
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50 + 4
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * (torch.tensor([w, h], dtype=torch.float64) - wh)
        boxes.append(torch.cat([xy, xy + wh], 1))
        sizes.append((h, w))
    return boxes, sizes


def _brute_force_best_iou(box, anchors):
    """One box's best IoU with every anchor, written out in float64 Python numbers."""
    best = 0.0
    bx1, by1, bx2, by2 = box.tolist()
    for ax1, ay1, ax2, ay2 in anchors.tolist():
        iw = max(0.0, min(bx2, ax2) - max(bx1, ax1))
        ih = max(0.0, min(by2, ay2) - max(by1, ay1))
        inter = iw * ih
        union = (bx2 - bx1) * (by2 - by1) + (ax2 - ax1) * (ay2 - ay1) - inter
        best = max(best, inter / union)
    return best


def test_coverage_best_iou_matches_brute_force():
    from retina_edu.anchors import anchor_coverage

    boxes, sizes = _random_dataset()
    cov = anchor_coverage(boxes, sizes, sizes=(16, 32, 64, 128, 256))
    expected = []
    for b, size in zip(boxes, sizes):
        anchors = generate_anchors(size, sizes=(16, 32, 64, 128, 256), dtype=torch.float64)
        expected.extend(_brute_force_best_iou(box, anchors) for box in b)
    torch.testing.assert_close(cov.best_iou, torch.tensor(expected, dtype=torch.float64))
    assert cov.num_unmatched == sum(e < 0.5 for e in expected)
    assert cov.coverage == pytest.approx(sum(e >= 0.5 for e in expected) / len(expected))
    assert cov.sizes == (16.0, 32.0, 64.0, 128.0, 256.0)


def test_box_sizes_are_square_roots_of_areas_in_original_pixels():
    from retina_edu.anchors import anchor_coverage

    boxes = [torch.tensor([[0.0, 0, 10, 40], [5.0, 5, 25, 25]])]
    for scale in (1.0, 2.0):
        cov = anchor_coverage(boxes, [(64, 64)], input_scale=scale)
        torch.testing.assert_close(cov.box_sizes, torch.tensor([20.0, 20.0], dtype=torch.float64))


def test_input_scale_equals_halved_anchors_and_strides():
    from retina_edu.anchors import anchor_coverage

    boxes, sizes = _random_dataset(1)
    doubled = anchor_coverage(boxes, sizes, sizes=(32, 64, 128, 256, 512), input_scale=2.0)
    # Doubling the image is halving anchors and strides: the same IoUs (IoU is scale-invariant).
    # Grids of odd sizes differ by a partial cell, so compare on sizes that are multiples of 128.
    b = [x for x, s in zip(boxes, sizes) if s[0] % 64 == 0]
    s = [x for x in sizes if x[0] % 64 == 0]
    d = anchor_coverage(b, s, sizes=(32, 64, 128, 256, 512), input_scale=2.0)
    h = anchor_coverage(b, s, sizes=(16, 32, 64, 128, 256), strides=(4, 8, 16, 32, 64))
    torch.testing.assert_close(d.best_iou, h.best_iou)
    assert doubled.input_scale == 2.0


def test_fit_picks_the_candidate_with_most_matched_objects():
    from retina_edu.anchors import anchor_coverage, fit_anchor_sizes

    boxes, sizes = _random_dataset(2)
    fit = fit_anchor_sizes(boxes, sizes, base_sizes=(8, 16, 32))
    matched = {b: anchor_coverage(boxes, sizes, tuple(b * 2**k for k in range(5))).coverage for b in (8, 16, 32)}
    assert {k: c.coverage for k, c in fit.tried.items()} == {(1.0, float(b)): c for b, c in matched.items()}
    assert fit.coverage.coverage == max(matched.values())
    assert fit.coverage.sizes == fit.sizes and fit.sizes[1] == 2 * fit.sizes[0]
    assert fit.current.sizes == tuple(float(s) for s in PAPER_ANCHOR_SIZES)
    # Small objects (4..54 px): smaller anchors than the paper's cover more of them.
    assert fit.coverage.coverage > fit.current.coverage


def test_paper_anchors_cannot_match_a_16_pixel_object():
    from retina_edu.anchors import anchor_coverage

    # The best any 32-px-or-larger anchor can do for a 16 x 16 box is 256 / 1024 = 0.25.
    cov = anchor_coverage([torch.tensor([[40.0, 40, 56, 56]])], [(128, 128)])
    assert float(cov.best_iou[0]) <= 0.25 + 1e-9 and cov.num_unmatched == 1
    assert "0 objects" not in cov.summary() and "1 have none" in cov.summary()


def test_dataset_boxes_reads_annotations_without_images(tiny_shapes):
    from retina_edu.anchors import dataset_boxes
    from retina_edu.data import open_dataset

    dataset = open_dataset(tiny_shapes)
    boxes, sizes = dataset_boxes(dataset)
    assert len(boxes) == len(sizes) == len(dataset)
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert sizes[i] == tuple(image.shape[-2:])
        torch.testing.assert_close(boxes[i], target["boxes"].double())
    with pytest.raises(ValueError, match="DetectionDataset"):
        dataset_boxes([1, 2, 3])


def test_anchor_coverage_refuses_mismatched_inputs():
    from retina_edu.anchors import anchor_coverage, fit_anchor_sizes

    with pytest.raises(ValueError, match="image sizes"):
        anchor_coverage([torch.zeros(0, 4)], [])
    with pytest.raises(ValueError, match="threshold"):
        anchor_coverage([torch.zeros(0, 4)], [(8, 8)], threshold=0)
    with pytest.raises(ValueError, match="base size"):
        fit_anchor_sizes([torch.zeros(0, 4)], [(8, 8)], base_sizes=())
