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
    assert [a.shape[0] for a in anchors_per_level((512, 512))] == [64 * 64 * 9, 32 * 32 * 9, 16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9]
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
        (800, 1088), sizes=torchvision_anchor_sizes(), scales=None, round_base=True,
        grid_sizes=grids, strides_from_grid=True,
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
