"""retina_edu.data.shapes: the generated shapes dataset is reproducible, tight, varied and written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert, box_iou

import retina_edu.data.shapes as shapes_module
from retina_edu.data import (
    SHAPES_CLASSES,
    ShapesConfig,
    draw_shape,
    generate_image,
    make_shapes,
    make_shapes_splits,
)


def _load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _siblings(root: Path) -> list[str]:
    """Hidden temporary folders (.name.tmp-*, .name.old-*) next to root."""
    return sorted(p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}."))


@pytest.fixture(scope="module")
def shapes_256(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The annotations of 200 default-size (256 px) shapes images."""
    root = make_shapes(
        tmp_path_factory.mktemp("s256") / "s", num_images=200, image_size=256, seed=3, workers=2, progress=False
    )
    return _load_json(root / "annotations.json")


def test_same_seed_gives_byte_identical_output_whatever_the_worker_count(tmp_path: Path) -> None:
    a = make_shapes(tmp_path / "a", num_images=40, image_size=64, seed=5, workers=1, progress=False)
    b = make_shapes(tmp_path / "b", num_images=40, image_size=64, seed=5, workers=2, progress=False)
    assert (a / "annotations.json").read_bytes() == (b / "annotations.json").read_bytes()
    for name in sorted(os.listdir(a / "images")):
        pixels_a = np.asarray(Image.open(a / "images" / name))
        pixels_b = np.asarray(Image.open(b / "images" / name))
        np.testing.assert_array_equal(pixels_a, pixels_b)


def test_different_seeds_give_different_data(tmp_path: Path) -> None:
    a = make_shapes(tmp_path / "a", num_images=8, image_size=64, seed=0, workers=1, progress=False)
    b = make_shapes(tmp_path / "b", num_images=8, image_size=64, seed=1, workers=1, progress=False)
    assert _load_json(a / "annotations.json")["annotations"] != _load_json(b / "annotations.json")["annotations"]
    assert not np.array_equal(
        np.asarray(Image.open(a / "images/000000.png")), np.asarray(Image.open(b / "images/000000.png"))
    )


def test_files_follow_the_coco_layout(tiny_shapes: Path) -> None:
    data = _load_json(tiny_shapes / "annotations.json")
    assert [c["name"] for c in data["categories"]] == list(SHAPES_CLASSES)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert {c["supercategory"] for c in data["categories"]} == {"shape"}
    assert [im["file_name"] for im in data["images"]] == [f"{i:06d}.png" for i in range(24)]
    assert data["info"]["seed"] == 0 and data["info"]["image_size"] == 96 and "version" in data["info"]
    ann_ids = [a["id"] for a in data["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1))  # from 1: COCOeval reads id 0 as "unmatched"
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert all(v == round(v, 2) for v in ann["bbox"])
        assert ann["area"] == pytest.approx(w * h, abs=0.01)
        assert ann["iscrowd"] == 0
    for im in data["images"]:
        image = Image.open(tiny_shapes / "images" / im["file_name"])
        assert image.mode == "RGB" and image.size == (im["width"], im["height"]) == (96, 96)


def test_generate_image_reproduces_the_written_files(tiny_shapes: Path) -> None:
    data = _load_json(tiny_shapes / "annotations.json")
    cfg = ShapesConfig(image_size=96)
    for index in (0, 5, 17):
        image, objects = generate_image(index, seed=0, config=cfg)
        np.testing.assert_array_equal(image, np.asarray(Image.open(tiny_shapes / f"images/{index:06d}.png")))
        anns = [a for a in data["annotations"] if a["image_id"] == index]
        assert [a["bbox"] for a in anns] == [obj.xywh for obj in objects]
        assert [a["category_id"] - 1 for a in anns] == [obj.label for obj in objects]


def test_boxes_are_tight_around_the_drawn_pixels(tiny_shapes: Path) -> None:
    """Draw each annotated shape alone on a plain background and read its pixels back."""
    data = _load_json(tiny_shapes / "annotations.json")
    checked = 0
    for index in range(24):
        _, objects = generate_image(index, seed=0, config=ShapesConfig(image_size=96))
        anns = [a for a in data["annotations"] if a["image_id"] == index]
        for obj, ann in zip(objects, anns, strict=True):
            canvas = np.zeros((96, 96, 3), dtype=np.float32)
            draw_shape(canvas, obj)
            ys, xs = np.nonzero(canvas.max(axis=2) > 0)
            drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)  # pixel edges
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(
                drawn, [x, y, x + w, y + h], atol=1.0 + 1e-6, err_msg=f"image {index} {SHAPES_CLASSES[obj.label]}"
            )
            checked += 1
    assert checked > 30


def test_every_class_is_drawn_and_boxes_stay_inside(shapes_256: dict) -> None:
    labels = {a["category_id"] for a in shapes_256["annotations"]}
    assert labels == {1, 2, 3, 4}
    boxes = torch.tensor([a["bbox"] for a in shapes_256["annotations"]], dtype=torch.float64)
    xyxy = box_convert(boxes, "xywh", "xyxy")
    assert (xyxy[:, :2] >= 0).all() and (xyxy[:, 2:] <= 256 + 1e-9).all()


def test_object_counts_range_from_zero_to_eight_with_some_empty_images(shapes_256: dict) -> None:
    counts = np.bincount([a["image_id"] for a in shapes_256["annotations"]], minlength=200)
    assert counts.min() == 0 and counts.max() == 8
    empty = int((counts == 0).sum())
    assert 2 <= empty <= 25  # about 5% of 200
    assert counts.mean() > 3  # dense scenes: about 4.5 shapes per non-empty image


def test_sizes_span_small_to_large_and_aspects_span_half_to_two(shapes_256: dict) -> None:
    wh = np.array([a["bbox"][2:] for a in shapes_256["annotations"]])
    larger = wh.max(axis=1)
    assert larger.min() < 12 and larger.max() > 150
    assert larger.min() >= 8 - 0.01 and larger.max() <= 0.8 * 256 + 0.01
    aspect = wh[:, 0] / wh[:, 1]
    assert aspect.min() >= 0.5 - 0.01 and aspect.max() <= 2.0 + 0.01
    assert aspect.min() < 0.6 and aspect.max() > 1.7
    # log-uniform larger side: about as many objects below the geometric mean as above it
    below = (larger < math.sqrt(8 * 204.8)).mean()
    assert 0.35 < below < 0.75  # overlap rejection removes some large ones


def test_boxes_of_an_image_overlap_by_at_most_iou_0_3(shapes_256: dict) -> None:
    by_image: dict[int, list] = {}
    for a in shapes_256["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    overlapping = 0
    for boxes in by_image.values():
        xyxy = box_convert(torch.tensor(boxes, dtype=torch.float64), "xywh", "xyxy")
        iou = box_iou(xyxy, xyxy).fill_diagonal_(0)
        assert iou.max() <= 0.3 + 1e-6
        overlapping += int((iou > 0).sum()) // 2
    assert overlapping > 0  # partial overlaps do happen


def test_larger_shapes_are_drawn_first() -> None:
    for index in range(10):
        _, objects = generate_image(index, seed=0)
        larger = [max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in objects]
        assert larger == sorted(larger, reverse=True)


def test_existing_data_is_not_overwritten_without_overwrite(tmp_path: Path) -> None:
    root = make_shapes(tmp_path / "d", num_images=4, image_size=32, seed=0, workers=1, progress=False)
    before = (root / "annotations.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_shapes(root, num_images=4, image_size=32, seed=1, workers=1, progress=False)
    assert (root / "annotations.json").read_bytes() == before
    make_shapes(root, num_images=3, image_size=32, seed=1, workers=1, progress=False, overwrite=True)
    assert (root / "annotations.json").read_bytes() != before
    assert sorted(os.listdir(root / "images")) == ["000000.png", "000001.png", "000002.png"]
    assert _siblings(root) == []


def test_a_folder_with_other_files_is_not_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        make_shapes(root, num_images=2, image_size=32, workers=1, progress=False)
    assert (root / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "error, workers",
    [
        (RuntimeError, 1),
        (KeyboardInterrupt, 1),
        pytest.param(
            RuntimeError,
            2,
            marks=pytest.mark.skipif(
                shapes_module._start_method() != "fork", reason="the patch reaches workers only when they are forked"
            ),
        ),
    ],
)
def test_interrupted_generation_leaves_no_folder_and_no_temp_folder(tmp_path, monkeypatch, error, workers) -> None:
    real = shapes_module.generate_image

    def failing(index, *args, **kwargs):
        if index == 20:
            raise error("boom")
        return real(index, *args, **kwargs)

    monkeypatch.setattr(shapes_module, "generate_image", failing)
    root = tmp_path / "out"
    with pytest.raises(error):
        make_shapes(root, num_images=40, image_size=32, workers=workers, progress=False)
    assert not root.exists()
    assert _siblings(root) == []


def test_interrupted_overwrite_keeps_the_old_data(tmp_path, monkeypatch) -> None:
    root = make_shapes(tmp_path / "out", num_images=3, image_size=32, workers=1, progress=False)
    before = (root / "annotations.json").read_bytes()

    def failing(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shapes_module, "_render_task", failing)
    with pytest.raises(RuntimeError):
        make_shapes(root, num_images=3, image_size=32, seed=9, workers=1, progress=False, overwrite=True)
    assert (root / "annotations.json").read_bytes() == before
    assert _siblings(root) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_images": 0}, "num_images"),
        ({"image_size": 8}, "image_size"),
        ({"min_size": 1}, "min_size"),
        ({"max_size": 500}, "max_size"),
        ({"max_objects": -1}, "max_objects"),
        ({"empty_fraction": 1.5}, "empty_fraction"),
        ({"max_iou": 0}, "max_iou"),
        ({"seed": -1}, "seed"),
    ],
)
def test_make_shapes_names_the_bad_parameter(tmp_path, kwargs, name) -> None:
    args = {"num_images": 2, "image_size": 64, **kwargs}
    with pytest.raises(ValueError, match=name):
        make_shapes(tmp_path / "x", progress=False, workers=1, **args)
    assert not (tmp_path / "x").exists()


def test_splits_use_seed_and_seed_plus_one_and_are_reused(tmp_path, monkeypatch) -> None:
    paths = make_shapes_splits(tmp_path / "shapes", train=4, val=3, image_size=32, seed=7, progress=False, workers=1)
    assert paths == {"train": tmp_path / "shapes/train", "val": tmp_path / "shapes/val"}
    assert _load_json(paths["train"] / "annotations.json")["info"]["seed"] == 7
    assert _load_json(paths["val"] / "annotations.json")["info"]["seed"] == 8
    assert len(os.listdir(paths["val"] / "images")) == 3

    def must_not_run(*args, **kwargs):
        raise AssertionError("an existing split was regenerated")

    monkeypatch.setattr(shapes_module, "make_shapes", must_not_run)
    assert make_shapes_splits(tmp_path / "shapes", train=4, val=3, image_size=32, seed=7, progress=False) == paths
    with pytest.raises(FileExistsError, match="overwrite"):
        make_shapes_splits(tmp_path / "shapes", train=5, val=3, image_size=32, seed=7, progress=False)
