"""Tests of retina_edu.data: the shapes generator, COCO/VOC readers, transforms, downloads, and the CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import math
import os
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_convert, box_iou, masks_to_boxes
from torchvision.transforms.v2 import functional as TF

import retina_edu.data.shapes as shapes_module
from retina_edu.__main__ import main
from retina_edu.data import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHAPES_CLASSES,
    CocoDetection,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ShapesConfig,
    VOCDetection,
    collate_fn,
    download_dataset,
    download_file,
    draw_shape,
    extract_archive,
    generate_image,
    make_shapes,
    make_shapes_splits,
    pennfudan_to_coco,
)


def _load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _siblings(root: Path) -> list[str]:
    """Hidden temporary folders (.name.tmp-*, .name.old-*) next to root."""
    return sorted(p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}."))


@pytest.fixture(scope="module")
def shapes_256(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The annotations of 200 default-size (256 px) shapes images."""
    root = make_shapes(tmp_path_factory.mktemp("s256") / "s", num_images=200, image_size=256, seed=3,
                       workers=2, progress=False)
    return _load_json(root / "annotations.json")


# ==================================================================================================
# The shapes generator
# ==================================================================================================


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
    assert not np.array_equal(np.asarray(Image.open(a / "images/000000.png")),
                              np.asarray(Image.open(b / "images/000000.png")))


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
            np.testing.assert_allclose(drawn, [x, y, x + w, y + h], atol=1.0 + 1e-6,
                                       err_msg=f"image {index} {SHAPES_CLASSES[obj.label]}")
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
        pytest.param(RuntimeError, 2, marks=pytest.mark.skipif(
            shapes_module._start_method() != "fork", reason="the patch reaches workers only when they are forked")),
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


# ==================================================================================================
# The CLI
# ==================================================================================================


def test_cli_shapes_makes_the_splits_then_reuses_them(tmp_path, capsys) -> None:
    out = tmp_path / "shapes"
    argv = ["shapes", "--out", str(out), "--train", "5", "--val", "3", "--image-size", "48", "--workers", "1"]
    assert main(argv) == 0
    assert len(_load_json(out / "train/annotations.json")["images"]) == 5
    assert len(_load_json(out / "val/annotations.json")["images"]) == 3
    capsys.readouterr()
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().out
    assert main(argv + ["--seed", "1", "--overwrite", "--quiet"]) == 0
    assert _load_json(out / "train/annotations.json")["info"]["seed"] == 1


def test_cli_reports_user_errors_in_one_line_with_exit_code_2(tmp_path, capsys) -> None:
    assert main(["shapes", "--out", str(tmp_path / "s"), "--train", "2", "--val", "0", "--image-size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image_size" in err and "Traceback" not in err
    assert main(["shapes", "--out", str(tmp_path / "s"), "--train", "2", "--val", "0", "--image-size", "32",
                 "--quiet"]) == 0
    assert main(["shapes", "--out", str(tmp_path / "s"), "--train", "3", "--val", "0", "--image-size", "32"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_without_a_command_or_with_a_bad_one_exits_2(capsys) -> None:
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0
    assert "shapes" in capsys.readouterr().out


# ==================================================================================================
# CocoDetection
# ==================================================================================================


def test_coco_round_trip_targets_match_the_json(tiny_shapes: Path) -> None:
    data = _load_json(tiny_shapes / "annotations.json")
    dataset = CocoDetection.from_folder(tiny_shapes)
    assert len(dataset) == 24 and dataset.ids == list(range(24))
    assert dataset.classes == list(SHAPES_CLASSES)
    assert dataset.category_id_to_label == {1: 0, 2: 1, 3: 2, 4: 3}
    assert dataset.label_to_category_id == {0: 1, 1: 2, 2: 3, 3: 4}
    for index in range(len(dataset)):
        image, target = dataset[index]
        anns = [a for a in data["annotations"] if a["image_id"] == dataset.ids[index]]
        expected = box_convert(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4),
                               "xywh", "xyxy")
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [a["category_id"] - 1 for a in anns]
        assert target["image_id"] == dataset.ids[index]
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        png = np.array(Image.open(tiny_shapes / "images" / f"{dataset.ids[index]:06d}.png"))
        torch.testing.assert_close(image, torch.from_numpy(png).permute(2, 0, 1).float() / 255)


def test_coco_api_is_pycocotools_on_the_same_file_and_silent(tiny_shapes: Path, capsys) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes)
    coco = dataset.coco_api()
    assert capsys.readouterr().out == ""
    assert sorted(coco.getImgIds()) == dataset.ids
    assert coco is dataset.coco_api()
    for index in (0, 3):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=dataset.ids[index]))
        expected = box_convert(torch.tensor([a["bbox"] for a in anns]).reshape(-1, 4), "xywh", "xyxy").float()
        torch.testing.assert_close(dataset.get_target(index)["boxes"], expected)


def _write_png(path: Path, width: int, height: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    shape = (height, width) if channels is None else (height, width, channels)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def _coco_base() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 32, "height": 24},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8], "iscrowd": 0},
            {"id": 6, "image_id": 1, "category_id": 3, "bbox": [12, 4, 6.5, 9], "iscrowd": 0},
            {"id": 7, "image_id": 2, "category_id": 7, "bbox": [0, 0, 40, 30]},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }


def _write_coco(tmp_path: Path, data: dict) -> Path:
    _write_png(tmp_path / "img" / "a.png", 32, 24)
    _write_png(tmp_path / "img" / "b.png", 40, 30)
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file


def test_category_ids_map_to_contiguous_labels_in_sorted_id_order(tmp_path: Path) -> None:
    dataset = CocoDetection(tmp_path / "img", _write_coco(tmp_path, _coco_base()))
    assert dataset.classes == ["cat", "dog"]  # ids 3, 7
    assert dataset.category_id_to_label == {3: 0, 7: 1}
    _, target = dataset[0]
    assert target["labels"].tolist() == [1, 0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[2, 3, 12, 11], [12, 4, 18.5, 13]], dtype=torch.float32))


def test_crowd_annotations_are_left_out_of_the_targets(tmp_path: Path) -> None:
    data = _coco_base()
    data["annotations"][1]["iscrowd"] = 1
    dataset = CocoDetection(tmp_path / "img", _write_coco(tmp_path, data))
    assert dataset.get_target(0)["labels"].tolist() == [1]
    assert dataset.num_crowd == 1


def test_a_box_poking_out_of_the_image_is_clipped(tmp_path: Path) -> None:
    data = _coco_base()
    data["annotations"][0]["bbox"] = [-5, 20, 12, 10]  # x from -5 to 7, y from 20 to 30 > 24
    dataset = CocoDetection(tmp_path / "img", _write_coco(tmp_path, data))
    torch.testing.assert_close(dataset.get_target(0)["boxes"][0], torch.tensor([0.0, 20.0, 7.0, 24.0]))


def test_grayscale_and_rgba_images_load_as_rgb(tmp_path: Path) -> None:
    ann_file = _write_coco(tmp_path, _coco_base())
    _write_png(tmp_path / "img" / "a.png", 32, 24, mode="L")
    _write_png(tmp_path / "img" / "b.png", 40, 30, mode="RGBA")
    dataset = CocoDetection(tmp_path / "img", ann_file)
    gray, _ = dataset[0]
    rgba, _ = dataset[1]
    assert gray.shape == (3, 24, 32) and rgba.shape == (3, 30, 40)
    torch.testing.assert_close(gray[0], gray[1])
    assert 0 <= float(rgba.min()) and float(rgba.max()) <= 1


def _drop(entry: dict, key: str) -> None:
    del entry[key]


BAD_COCO = {
    "missing images": (lambda d: _drop(d, "images"), ["missing top-level key 'images'"]),
    "missing annotations": (lambda d: _drop(d, "annotations"), ["missing top-level key 'annotations'"]),
    "missing categories": (lambda d: _drop(d, "categories"), ["missing top-level key 'categories'"]),
    "image without width": (lambda d: _drop(d["images"][1], "width"), ["image 2 ('b.png')", "missing key 'width'"]),
    "annotation without bbox": (lambda d: _drop(d["annotations"][1], "bbox"),
                                ["annotation 6 (index 1)", "missing key 'bbox'"]),
    "bbox of 3 numbers": (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]),
                          ["image 1 ('a.png')", "annotation 6 (index 1)", "bbox [1, 2, 3]", "4 finite numbers"]),
    "bbox with a string": (lambda d: d["annotations"][1].update(bbox=["1", 2, 3, 4]),
                           ["annotation 6", 'bbox ["1", 2, 3, 4]', "4 finite numbers"]),
    "bbox with infinity": (lambda d: d["annotations"][1].update(bbox=[1, 2, float("inf"), 4]),
                           ["annotation 6", "4 finite numbers"]),
    "zero width": (lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 9]),
                   ["image 1 ('a.png')", "annotation 5 (index 0)", "bbox [5, 5, 0, 9]", "width or height <= 0"]),
    "negative height": (lambda d: d["annotations"][2].update(bbox=[5, 5, 3, -9]),
                        ["image 2 ('b.png')", "annotation 7 (index 2)", "bbox [5, 5, 3, -9]", "<= 0"]),
    "box outside the image": (lambda d: d["annotations"][0].update(bbox=[100, 5, 5, 5]),
                              ["annotation 5", "bbox [100, 5, 5, 5]", "entirely outside the 32x24 image"]),
    "unknown category": (lambda d: d["annotations"][0].update(category_id=9),
                         ["image 1 ('a.png')", "annotation 5", "unknown category id 9"]),
    "unknown image": (lambda d: d["annotations"][2].update(image_id=42),
                      ["annotation 7 (index 2)", "unknown image id 42"]),
    "duplicate image id": (lambda d: d["images"][1].update(id=1),
                           ["image 1 ('b.png') at index 1", "duplicate image id"]),
    "duplicate annotation id": (lambda d: d["annotations"][1].update(id=5), ["annotation 5 (index 1)", "duplicate"]),
}


@pytest.mark.parametrize("case", sorted(BAD_COCO))
def test_malformed_coco_files_raise_value_error_naming_file_image_and_box(tmp_path: Path, case: str) -> None:
    mutate, fragments = BAD_COCO[case]
    data = _coco_base()
    mutate(data)
    ann_file = _write_coco(tmp_path, data)
    with pytest.raises(ValueError) as info:
        CocoDetection(tmp_path / "img", ann_file)
    message = str(info.value)
    assert str(ann_file) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_invalid_json_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    ann_file = _write_coco(tmp_path, _coco_base())
    ann_file.write_text('{"images": [')
    with pytest.raises(ValueError, match="not a valid JSON"):
        CocoDetection(tmp_path / "img", ann_file)


def test_missing_image_file_is_reported_at_construction(tmp_path: Path) -> None:
    ann_file = _write_coco(tmp_path, _coco_base())
    (tmp_path / "img" / "b.png").unlink()
    with pytest.raises(FileNotFoundError) as info:
        CocoDetection(tmp_path / "img", ann_file)
    assert "image 2 ('b.png')" in str(info.value) and str(tmp_path / "img" / "b.png") in str(info.value)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoDetection(tmp_path / "img", tmp_path / "nope.json")


def test_corrupt_image_file_raises_value_error_naming_it_when_loaded(tmp_path: Path) -> None:
    ann_file = _write_coco(tmp_path, _coco_base())
    (tmp_path / "img" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = CocoDetection(tmp_path / "img", ann_file)
    dataset[0]
    with pytest.raises(ValueError) as info:
        dataset[1]
    assert "b.png" in str(info.value) and "image 2" in str(info.value)


def test_image_size_differing_from_the_annotations_is_an_error(tmp_path: Path) -> None:
    ann_file = _write_coco(tmp_path, _coco_base())
    _write_png(tmp_path / "img" / "a.png", 30, 24)
    with pytest.raises(ValueError, match="30x24 pixels but .* says 32x24"):
        CocoDetection(tmp_path / "img", ann_file)[0]


def test_dataset_applies_its_transforms(tiny_shapes: Path) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes, transforms=Resize(48))
    image, target = dataset[1]
    assert image.shape == (3, 48, 48)
    torch.testing.assert_close(target["boxes"], dataset.get_target(1)["boxes"] * 0.5)


# ==================================================================================================
# VOCDetection
# ==================================================================================================


def _voc_xml(filename: str | None, objects: list[dict], size: tuple[int, int] | None = (32, 24)) -> str:
    parts = ["<annotation>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for obj in objects:
        parts.append("<object>")
        if "name" in obj:
            parts.append(f"<name>{obj['name']}</name>")
        if "difficult" in obj:
            parts.append(f"<difficult>{obj['difficult']}</difficult>")
        if "box" in obj:
            tags = ("xmin", "ymin", "xmax", "ymax")
            parts.append("<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, obj["box"]) if v is not None)
                         + "</bndbox>")
        parts.append("</object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def _write_voc(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path]:
    image_dir, ann_dir = tmp_path / "JPEGImages", tmp_path / "Annotations"
    _write_png(image_dir / "a.png", 32, 24)
    _write_png(image_dir / "b.png", 32, 24)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (ann_dir / name).write_text(text)
    return image_dir, ann_dir


def _voc_good() -> dict[str, str]:
    return {
        "a.xml": _voc_xml("a.png", [
            {"name": "dog", "box": (1, 1, 10, 12), "difficult": 0},
            {"name": "cat", "box": (5, 6, 20, 24), "difficult": 1},
        ]),
        "b.xml": _voc_xml("b.png", [{"name": "cat", "box": (3, 4, 30, 20)}]),
    }


def test_voc_boxes_become_zero_based_and_difficult_objects_are_left_out(tmp_path: Path) -> None:
    dataset = VOCDetection(*_write_voc(tmp_path, _voc_good()))
    assert dataset.classes == ["cat", "dog"] and dataset.ids == ["a", "b"] and len(dataset) == 2
    image, target = dataset[0]
    assert image.shape == (3, 24, 32)
    # xmin=1, xmax=10 (1-based, inclusive) covers pixels 0..9, i.e. [0, 10) in continuous coordinates
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0.0, 10.0, 12.0]]))
    assert target["labels"].tolist() == [1] and target["image_id"] == 0
    torch.testing.assert_close(dataset[1][1]["boxes"], torch.tensor([[2.0, 3.0, 30.0, 20.0]]))


def test_voc_given_classes_set_the_labels_and_unknown_names_are_errors(tmp_path: Path) -> None:
    image_dir, ann_dir = _write_voc(tmp_path, _voc_good())
    dataset = VOCDetection(image_dir, ann_dir, classes=["dog", "cat", "bird"])
    assert dataset.get_target(0)["labels"].tolist() == [0] and dataset.get_target(1)["labels"].tolist() == [1]
    with pytest.raises(ValueError) as info:
        VOCDetection(image_dir, ann_dir, classes=["dog"])
    assert "a.xml" in str(info.value) and "object 1" in str(info.value) and "'cat'" in str(info.value)


def test_voc_box_poking_out_is_clipped(tmp_path: Path) -> None:
    files = {"a.xml": _voc_xml("a.png", [{"name": "dog", "box": (0, 20, 40, 30)}])}
    dataset = VOCDetection(*_write_voc(tmp_path, files))
    torch.testing.assert_close(dataset.get_target(0)["boxes"], torch.tensor([[0.0, 19.0, 32.0, 24.0]]))


def test_voc_without_size_reads_it_from_the_image(tmp_path: Path) -> None:
    files = {"a.xml": _voc_xml("a.png", [{"name": "dog", "box": (1, 1, 50, 50)}], size=None)}
    dataset = VOCDetection(*_write_voc(tmp_path, files))
    torch.testing.assert_close(dataset.get_target(0)["boxes"], torch.tensor([[0.0, 0.0, 32.0, 24.0]]))


def test_voc_coco_api_keeps_difficult_objects_as_crowd(tmp_path: Path) -> None:
    dataset = VOCDetection(*_write_voc(tmp_path, _voc_good()))
    coco = dataset.coco_api()
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[0]))
    assert [a["iscrowd"] for a in anns] == [0, 1]
    assert [dataset.category_id_to_label[a["category_id"]] for a in anns] == [1, 0]
    expected = box_convert(torch.tensor([a["bbox"] for a in anns if not a["iscrowd"]]), "xywh", "xyxy")
    torch.testing.assert_close(dataset.get_target(0)["boxes"], expected.float())


BAD_VOC = {
    "xmax < xmin": (_voc_xml("a.png", [{"name": "dog", "box": (10, 1, 5, 12)}]),
                    ["object 0 ('dog')", "xmin=10", "xmax=5", "xmax < xmin"]),
    "ymax < ymin": (_voc_xml("a.png", [{"name": "dog", "box": (1, 10, 5, 2)}]), ["ymax < ymin"]),
    "missing bndbox": (_voc_xml("a.png", [{"name": "dog"}]), ["object 0 ('dog')", "missing <bndbox>"]),
    "missing xmin": (_voc_xml("a.png", [{"name": "dog", "box": (None, 1, 5, 12)}]), ["object 0", "missing <xmin>"]),
    "non-numeric": (_voc_xml("a.png", [{"name": "dog", "box": (1, "abc", 5, 12)}]), ["<ymin> is 'abc', not a number"]),
    "missing name": (_voc_xml("a.png", [{"box": (1, 1, 5, 12)}]), ["object 0", "missing <name>"]),
    "missing filename": (_voc_xml(None, []), ["missing <filename>"]),
    "outside": (_voc_xml("a.png", [{"name": "dog", "box": (40, 1, 50, 12)}]), ["entirely outside the 32x24 image"]),
    "bad difficult": (_voc_xml("a.png", [{"name": "dog", "box": (1, 1, 5, 5), "difficult": "yes"}]), ["<difficult>"]),
    "invalid xml": ("<annotation><filename>a.png</filename>", ["not a valid XML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_VOC))
def test_malformed_voc_files_raise_value_error_naming_file_and_object(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_VOC[case]
    image_dir, ann_dir = _write_voc(tmp_path, {"a.xml": text})
    with pytest.raises(ValueError) as info:
        VOCDetection(image_dir, ann_dir)
    message = str(info.value)
    assert str(ann_dir / "a.xml") in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_voc_missing_image_is_reported(tmp_path: Path) -> None:
    image_dir, ann_dir = _write_voc(tmp_path, {"a.xml": _voc_xml("nope.jpg", [])})
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        VOCDetection(image_dir, ann_dir)


# ==================================================================================================
# Transforms
# ==================================================================================================


def _image_with_box(height: int, width: int, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, dict]:
    image = torch.zeros(3, height, width)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([2]), "image_id": 7}
    return image, target


def _pixel_box(image: torch.Tensor, threshold: float = 0.5) -> list[float]:
    ys, xs = torch.nonzero(image[0] > threshold, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def test_horizontal_flip_moves_boxes_with_the_pixels() -> None:
    image, target = _image_with_box(40, 60, (5, 10, 25, 30))
    flipped, out = RandomHorizontalFlip(p=1.0)(image, target)
    assert out["boxes"].tolist() == [[35.0, 10.0, 55.0, 30.0]] == [_pixel_box(flipped)]
    reference = TF.horizontal_flip(tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(40, 60)))
    torch.testing.assert_close(out["boxes"], reference.as_subclass(torch.Tensor))
    assert out["labels"] is target["labels"] and out["image_id"] == 7


def test_horizontal_flip_twice_is_identity() -> None:
    image, target = torch.rand(3, 17, 23), {"boxes": torch.tensor([[1.5, 2.0, 7.25, 9.0], [0.0, 0.0, 23.0, 17.0]])}
    flip = RandomHorizontalFlip(p=1.0)
    twice_image, twice = flip(*flip(image, target))
    torch.testing.assert_close(twice_image, image)
    torch.testing.assert_close(twice["boxes"], target["boxes"])


def test_horizontal_flip_with_p_zero_is_a_no_op_and_generator_makes_it_reproducible() -> None:
    image, target = _image_with_box(8, 8, (1, 1, 3, 3))
    assert RandomHorizontalFlip(p=0.0)(image, target)[1] is target
    runs = []
    for _ in range(2):
        flip = RandomHorizontalFlip(0.5, generator=torch.Generator().manual_seed(0))
        runs.append([flip(image, target)[1] is not target for _ in range(20)])
    assert runs[0] == runs[1] and 0 < sum(runs[0]) < 20


def test_resize_keeps_aspect_and_letterboxes_bottom_right() -> None:
    image, target = _image_with_box(60, 100, (10, 20, 30, 40))
    out_image, out = Resize(50)(image, target)
    assert out_image.shape == (3, 50, 50)
    torch.testing.assert_close(out["boxes"], torch.tensor([[5.0, 10.0, 15.0, 20.0]]))
    assert _pixel_box(out_image) == [5.0, 10.0, 15.0, 20.0]
    assert float(out_image[:, 30:, :].abs().max()) == 0.0  # padding rows are zeros
    torch.testing.assert_close(out["scale"], torch.tensor([0.5, 0.5, 0.5, 0.5]))
    reference = TF.resize(tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(60, 100)), [30, 50])
    torch.testing.assert_close(out["boxes"], reference.as_subclass(torch.Tensor))


def test_resize_without_pad_or_aspect() -> None:
    image, target = _image_with_box(60, 100, (10, 20, 30, 40))
    out_image, out = Resize(50, pad=False)(image, target)
    assert out_image.shape == (3, 30, 50)
    out_image, out = Resize((30, 40), keep_aspect=False)(image, target)
    assert out_image.shape == (3, 30, 40)
    torch.testing.assert_close(out["boxes"], torch.tensor([[4.0, 10.0, 12.0, 20.0]]))
    reference = TF.resize(tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(60, 100)), [30, 40])
    torch.testing.assert_close(out["boxes"], reference.as_subclass(torch.Tensor))
    # boxes / scale maps back to the original image
    torch.testing.assert_close(out["boxes"] / out["scale"], target["boxes"])


def test_normalize_matches_torchvision_and_leaves_the_target() -> None:
    image, target = torch.rand(3, 5, 7), {"boxes": torch.zeros(0, 4)}
    out, out_target = Normalize()(image, target)
    torch.testing.assert_close(out, TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD)))
    assert out_target is target


def test_compose_applies_transforms_in_order() -> None:
    image, target = _image_with_box(60, 100, (10, 20, 30, 40))
    composed = Compose([Resize(50), RandomHorizontalFlip(p=1.0)])
    out_image, out = composed(image, target)
    # flip happens in the padded 50 x 50 frame
    assert out["boxes"].tolist() == [[35.0, 10.0, 45.0, 20.0]] == [_pixel_box(out_image)]


@pytest.mark.parametrize("transform", [Resize(32), RandomHorizontalFlip(1.0), Normalize()])
def test_transforms_reject_malformed_inputs(transform) -> None:
    with pytest.raises(ValueError, match="image must be a Tensor"):
        transform(torch.rand(5, 5), {"boxes": torch.zeros(0, 4)})
    with pytest.raises(ValueError, match=r"boxes'\] must be a Tensor\[N, 4\]"):
        transform(torch.rand(3, 5, 5), {"boxes": torch.zeros(3)})


def test_collate_stacks_images_of_one_size_and_keeps_a_list_otherwise() -> None:
    a = (torch.rand(3, 8, 8), {"boxes": torch.zeros(1, 4)})
    b = (torch.rand(3, 8, 8), {"boxes": torch.zeros(2, 4)})
    c = (torch.rand(3, 8, 6), {"boxes": torch.zeros(0, 4)})
    images, targets = collate_fn([a, b])
    assert isinstance(images, torch.Tensor) and images.shape == (2, 3, 8, 8)
    assert targets == [a[1], b[1]]
    images, targets = collate_fn([a, c])
    assert isinstance(images, list) and len(images) == 2 and len(targets) == 2


def test_collate_works_in_a_dataloader(tiny_shapes: Path) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_fn)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 96, 96) and [t["image_id"] for t in targets] == [0, 1, 2, 3]


# ==================================================================================================
# Downloads
# ==================================================================================================


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture()
def http_dir(tmp_path: Path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base_url)."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_with_the_right_checksum_lands_in_place(tmp_path: Path, http_dir) -> None:
    www, base = http_dir
    payload = os.urandom(300_000)
    (www / "data.bin").write_bytes(payload)
    dest = download_file(f"{base}/data.bin", tmp_path / "dl" / "data.bin",
                         sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert sorted(os.listdir(dest.parent)) == ["data.bin"]
    (www / "data.bin").unlink()  # already there with the right hash: not downloaded again
    assert download_file(f"{base}/data.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False) == dest


def test_download_from_a_file_url(tmp_path: Path) -> None:
    source = tmp_path / "src.txt"
    source.write_bytes(b"hello")
    dest = download_file(source.as_uri(), tmp_path / "out" / "copy.txt", sha256=hashlib.sha256(b"hello").hexdigest(),
                         progress=False)
    assert dest.read_bytes() == b"hello"


def test_download_with_a_bad_checksum_raises_and_leaves_nothing(tmp_path: Path, http_dir) -> None:
    www, base = http_dir
    (www / "data.bin").write_bytes(b"x" * 1000)
    dest_dir = tmp_path / "dl"
    url = f"{base}/data.bin"
    with pytest.raises(ValueError) as info:
        download_file(url, dest_dir / "data.bin", sha256="0" * 64, progress=False)
    message = str(info.value)
    assert url in message and "0" * 64 in message and hashlib.sha256(b"x" * 1000).hexdigest() in message
    assert os.listdir(dest_dir) == []


def test_download_failure_is_a_connection_error_pointing_to_the_offline_course(tmp_path: Path, http_dir) -> None:
    _, base = http_dir
    with pytest.raises(ConnectionError) as info:  # 404
        download_file(f"{base}/missing.zip", tmp_path / "m.zip", progress=False)
    assert f"{base}/missing.zip" in str(info.value) and "shapes" in str(info.value)
    with socket.socket() as s:  # a port that nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = f"http://127.0.0.1:{port}/nothing.zip"
    with pytest.raises(ConnectionError, match=f"download failed: {unreachable}"):
        download_file(unreachable, tmp_path / "n.zip", progress=False, timeout=5)
    assert sorted(os.listdir(tmp_path)) == ["www"]


def test_extract_archive_handles_zip_and_tar_gz(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("top/x.txt", "zip")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("top/y.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"tar"))
    assert (extract_archive(tmp_path / "a.zip", tmp_path / "out") / "top/x.txt").read_text() == "zip"
    assert (extract_archive(tmp_path / "a.tar.gz", tmp_path / "out") / "top/y.txt").read_text() == "tar"
    with pytest.raises(ValueError, match="unsupported archive"):
        extract_archive(tmp_path / "a.rar", tmp_path / "out")


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil-retina-edu.txt", "ok/../../evil.txt"])
def test_extract_archive_rejects_members_escaping_the_destination(tmp_path: Path, member: str) -> None:
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("fine.txt", "fine")
        zf.writestr(member, "evil")
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        info = tarfile.TarInfo(member)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    for archive in ("bad.zip", "bad.tar"):
        with pytest.raises(ValueError, match="outside"):
            extract_archive(tmp_path / archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest" / "fine.txt").exists()  # nothing extracted
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_extract_archive_rejects_links_pointing_outside(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "link.tar", "w") as tf:
        info = tarfile.TarInfo("top/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(ValueError, match="outside"):
        extract_archive(tmp_path / "link.tar", tmp_path / "dest")


def _fake_pennfudan(root: Path) -> list[np.ndarray]:
    """Two images with instance masks (values 1..k), as in PennFudanPed/{PNGImages,PedMasks}."""
    masks = []
    for name, (h, w), instances in (("FudanPed00001", (40, 50), [(2, 3, 10, 20), (20, 5, 45, 38)]),
                                    ("PennPed00002", (30, 20), [(0, 0, 20, 30)])):
        _write_png(root / "PNGImages" / f"{name}.png", w, h)
        mask = np.zeros((h, w), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(instances, start=1):
            mask[y1:y2, x1:x2] = k
            mask[y1, x1] = 0  # not a full rectangle: the box must come from the pixels
        (root / "PedMasks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").convert("P").save(root / "PedMasks" / f"{name}_mask.png")
        masks.append(mask)
    return masks


def test_pennfudan_masks_become_tight_coco_boxes(tmp_path: Path) -> None:
    root = tmp_path / "PennFudanPed"
    masks = _fake_pennfudan(root)
    ann_file = pennfudan_to_coco(root)
    dataset = CocoDetection(root / "PNGImages", ann_file)
    assert dataset.classes == ["pedestrian"] and len(dataset) == 2
    for index, mask in enumerate(masks):
        instances = torch.stack([torch.from_numpy(mask == k) for k in range(1, int(mask.max()) + 1)])
        # masks_to_boxes gives inclusive pixel indices; COCO boxes run to the far pixel edge (+1)
        expected = masks_to_boxes(instances) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        image, target = dataset[index]
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [0] * len(instances)
        assert image.shape[1:] == mask.shape
    areas = [a["area"] for a in _load_json(ann_file)["annotations"]]
    assert areas == [int((m == k).sum()) for m in masks for k in range(1, int(m.max()) + 1)]


def test_download_dataset_downloads_extracts_and_converts(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "source"
    _fake_pennfudan(source / "PennFudanPed")
    archive = tmp_path / "PennFudanPed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((source / "PennFudanPed").rglob("*.png")):
            zf.write(path, path.relative_to(source).as_posix())
    spec = DATASETS["pennfudan"]
    local = type(spec)(url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
                       folder=spec.folder, images=spec.images, convert=spec.convert, description=spec.description)
    monkeypatch.setitem(DATASETS, "pennfudan", local)
    folder = download_dataset("pennfudan", tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "PennFudanPed"
    dataset = CocoDetection(folder / local.images, folder / "annotations.json")
    assert len(dataset) == 2 and len(dataset.get_target(0)["boxes"]) == 2
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["PennFudanPed", "PennFudanPed.zip"]


def test_the_registry_points_at_the_real_pennfudan_archive() -> None:
    spec = DATASETS["pennfudan"]
    assert spec.url == "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
    assert spec.sha256 is None or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)
    with pytest.raises(ValueError, match="unknown dataset"):
        download_dataset("imagenet")
