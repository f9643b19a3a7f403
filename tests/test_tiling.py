"""Tiling (retina_edu.tiling): windows cover the image, boxes are cut like the pixels, and
detections stitched from tiles equal whole-image detections."""

import pytest
import torch

from retina_edu.boxes import box_iou
from retina_edu.tiling import crop_boxes, detect_tiled, stitch_detections, tile_origins, tile_windows


@pytest.mark.parametrize(
    "length,tile,overlap",
    [(400, 256, 64), (2299, 256, 32), (256, 256, 0), (100, 256, 32), (257, 256, 0), (1000, 300, 299)],
)
def test_tiles_cover_every_pixel_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_origins(length, tile, overlap)
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # consecutive tiles share at least `overlap` pixels


def test_windows_are_row_major_and_clipped_to_small_images():
    assert tile_windows((400, 400), 256, 64) == [
        (0, 0, 256, 256),
        (144, 0, 400, 256),
        (0, 144, 256, 400),
        (144, 144, 400, 400),
    ]
    assert tile_windows((100, 300), 256, 32) == [(0, 0, 256, 100), (44, 0, 300, 100)]


@pytest.mark.parametrize("bad", [{"overlap": 256}, {"overlap": -1}, {"tile": 0}])
def test_tile_origins_refuses_bad_sizes(bad):
    args = {"length": 400, "tile": 256, "overlap": 32, **bad}
    with pytest.raises(ValueError, match="tile_origins"):
        tile_origins(**args)


def test_crop_keeps_boxes_by_visible_area_and_shifts_them():
    boxes = torch.tensor(
        [
            [10.0, 10, 30, 30],  # inside
            [70.0, 10, 110, 30],  # 25% inside the tile [100, 200)
            [110.0, 40, 150, 60],  # inside
            [180.0, 0, 220, 20],
        ]
    )  # half inside
    tile_boxes, keep = crop_boxes(boxes, (100, 0, 200, 100), min_visible=0.5)
    assert keep.tolist() == [False, False, True, True]
    torch.testing.assert_close(tile_boxes, torch.tensor([[10.0, 40, 50, 60], [80.0, 0, 100, 20]]))
    _, keep_all = crop_boxes(boxes, (100, 0, 200, 100), min_visible=0.2)
    assert keep_all.tolist() == [False, True, True, True]


class OracleDetector:
    """Detects exactly the objects lying whole inside the image it is given (scores by object),
    plus a truncated copy, scored lower, of each object the image shows at least 60% of: what a
    real detector does at a tile border (NMS removes the copy: its IoU with the whole box is > 0.5)."""

    def __init__(self, boxes, scores, window_of_image):
        self.boxes, self.scores, self.window_of_image = boxes, scores, window_of_image

    def __call__(self, images):
        out = []
        for image in images:
            x1, y1, x2, y2 = self.window_of_image(image)
            tile_boxes, keep = crop_boxes(self.boxes, (x1, y1, x2, y2), min_visible=0.6)
            whole = crop_boxes(self.boxes[keep], (x1, y1, x2, y2), min_visible=1.0)[1]
            scores = torch.where(whole, self.scores[keep], self.scores[keep] * 0.5)
            out.append({"boxes": tile_boxes, "scores": scores, "labels": torch.zeros(len(scores), dtype=torch.long)})
        return out


def test_stitched_tiles_equal_whole_image_detection():
    torch.manual_seed(0)
    height, width, tile, overlap = 300, 420, 128, 48
    # Objects up to 40 px (< overlap): every one is whole in some tile. Spread so that no two overlap.
    xy = torch.stack(torch.meshgrid(torch.arange(8.0, 400, 55), torch.arange(8.0, 280, 55), indexing="xy"), -1)
    xy = xy.reshape(-1, 2)
    wh = torch.randint(10, 41, xy.shape).float()
    boxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([width - 1.0, height - 1.0]))], 1)
    scores = torch.rand(len(boxes)) * 0.5 + 0.5
    image = torch.zeros(3, height, width)
    # The oracle finds where a crop came from by a coordinate code painted in the image.
    image[0] = torch.arange(width).float()[None, :] / 1000
    image[1] = torch.arange(height).float()[:, None] / 1000

    def window_of_image(crop):
        x1, y1 = round(float(crop[0, 0, 0]) * 1000), round(float(crop[1, 0, 0]) * 1000)
        return x1, y1, x1 + crop.shape[2], y1 + crop.shape[1]

    detector = OracleDetector(boxes, scores, window_of_image)
    whole = detector([image])[0]
    tiled = detect_tiled(detector, image, tile, overlap, nms_thresh=0.5, batch_size=3)
    assert len(tile_windows((height, width), tile, overlap)) > 4
    assert len(tiled["boxes"]) == len(whole["boxes"]) == len(boxes)
    order = torch.argsort(whole["scores"], descending=True)
    torch.testing.assert_close(tiled["boxes"], whole["boxes"][order])
    torch.testing.assert_close(tiled["scores"], whole["scores"][order])


def test_stitch_removes_duplicates_across_tiles_but_not_across_classes():
    # One object seen by two tiles (shifted coordinates), and another class at the same place.
    a = {"boxes": torch.tensor([[90.0, 10, 120, 40]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    b = {
        "boxes": torch.tensor([[10.0, 10, 40, 40], [10.0, 10, 40, 40]]),
        "scores": torch.tensor([0.8, 0.7]),
        "labels": torch.tensor([0, 1]),
    }
    out = stitch_detections([a, b], [(0, 0, 128, 128), (80, 0, 208, 128)])
    assert out["labels"].tolist() == [0, 1]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert float(box_iou(out["boxes"][:1], torch.tensor([[90.0, 10, 120, 40]]))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="windows"):
        stitch_detections([a], [(0, 0, 1, 1), (0, 0, 2, 2)])


def test_detect_tiled_runs_a_retinanet_on_tiles():
    from retina_edu.model import RetinaNet

    torch.manual_seed(0)
    model = RetinaNet(num_classes=1, backbone="resnet18", fpn_channels=16, head_convs=1, resize=False).eval()
    out = detect_tiled(model, torch.rand(3, 200, 300), tile=128, overlap=32)
    assert set(out) == {"boxes", "scores", "labels"}
    if len(out["boxes"]):
        assert float(out["boxes"][:, 2].max()) <= 300 and float(out["boxes"][:, 3].max()) <= 200
        assert torch.all(out["scores"][:-1] >= out["scores"][1:])
