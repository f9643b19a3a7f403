"""retina_edu.data.coco: CocoDetection reads COCO files into targets, and names what is wrong in bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert

from retina_edu.data import SHAPES_CLASSES, CocoDetection, Resize


def _load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


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
        expected = box_convert(
            torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy"
        )
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
    """A PNG of random pixels at ``path`` (also used by test_data_voc and test_data_download)."""
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
    "annotation without bbox": (
        lambda d: _drop(d["annotations"][1], "bbox"),
        ["annotation 6 (index 1)", "missing key 'bbox'"],
    ),
    "bbox of 3 numbers": (
        lambda d: d["annotations"][1].update(bbox=[1, 2, 3]),
        ["image 1 ('a.png')", "annotation 6 (index 1)", "bbox [1, 2, 3]", "4 finite numbers"],
    ),
    "bbox with a string": (
        lambda d: d["annotations"][1].update(bbox=["1", 2, 3, 4]),
        ["annotation 6", 'bbox ["1", 2, 3, 4]', "4 finite numbers"],
    ),
    "bbox with infinity": (
        lambda d: d["annotations"][1].update(bbox=[1, 2, float("inf"), 4]),
        ["annotation 6", "4 finite numbers"],
    ),
    "zero width": (
        lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 9]),
        ["image 1 ('a.png')", "annotation 5 (index 0)", "bbox [5, 5, 0, 9]", "width or height <= 0"],
    ),
    "negative height": (
        lambda d: d["annotations"][2].update(bbox=[5, 5, 3, -9]),
        ["image 2 ('b.png')", "annotation 7 (index 2)", "bbox [5, 5, 3, -9]", "<= 0"],
    ),
    "box outside the image": (
        lambda d: d["annotations"][0].update(bbox=[100, 5, 5, 5]),
        ["annotation 5", "bbox [100, 5, 5, 5]", "entirely outside the 32x24 image"],
    ),
    "unknown category": (
        lambda d: d["annotations"][0].update(category_id=9),
        ["image 1 ('a.png')", "annotation 5", "unknown category id 9"],
    ),
    "unknown image": (
        lambda d: d["annotations"][2].update(image_id=42),
        ["annotation 7 (index 2)", "unknown image id 42"],
    ),
    "duplicate image id": (
        lambda d: d["images"][1].update(id=1),
        ["image 1 ('b.png') at index 1", "duplicate image id"],
    ),
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


@pytest.mark.parametrize("damage", ["not an image", "truncated"])
def test_a_corrupt_image_is_reported_when_the_dataset_is_opened_naming_it(tmp_path: Path, damage: str) -> None:
    ann_file = _write_coco(tmp_path, _coco_base())
    path = tmp_path / "img" / "b.png"
    data = path.read_bytes()
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png" if damage == "not an image" else data[: len(data) // 2])
    with pytest.raises(ValueError) as info:
        CocoDetection(tmp_path / "img", ann_file)
    message = str(info.value)
    assert "\n" not in message and str(ann_file) in message and "image 2" in message and str(path) in message


def test_opening_reads_headers_only_and_loading_still_checks_the_file(tmp_path: Path, monkeypatch) -> None:
    import retina_edu.data.base as base_module

    dataset = CocoDetection(tmp_path / "img", _write_coco(tmp_path, _coco_base()))
    _write_png(tmp_path / "img" / "b.png", 41, 30)  # replaced after opening
    with pytest.raises(ValueError, match="41x30 pixels but .* says 40x30"):
        dataset[1]
    decoded = []
    monkeypatch.setattr(base_module, "load_image", lambda path: decoded.append(path))
    CocoDetection(tmp_path / "img", _write_coco(tmp_path, _coco_base()))
    assert decoded == []


def test_two_images_sharing_a_file_name_is_an_error_naming_both(tmp_path: Path) -> None:
    data = _coco_base()
    data["images"][1]["file_name"] = "a.png"
    with pytest.raises(ValueError, match=r"images 1 and 2 share the file_name 'a.png'"):
        CocoDetection(tmp_path / "img", _write_coco(tmp_path, data))


@pytest.mark.parametrize("name", ["../a.png", "sub/../../a.png", "/tmp/a.png"])
def test_file_names_leaving_the_image_folder_are_refused(tmp_path: Path, name: str) -> None:
    data = _coco_base()
    data["images"][0]["file_name"] = name
    _write_png(tmp_path / "a.png", 32, 24)  # the file exists: only where it points is wrong
    with pytest.raises(ValueError, match=rf"image 1 \({name!r}\): file name {name!r} leaves the image folder"):
        CocoDetection(tmp_path / "img", _write_coco(tmp_path, data))


def test_boxes_written_as_xyxy_give_a_warning_saying_so(tmp_path: Path) -> None:
    data = _coco_base()
    data["annotations"] = [
        {"id": k, "image_id": 2, "category_id": 7, "bbox": [x1, y1, x2, y2]}
        for k, (x1, y1, x2, y2) in enumerate([(10, 5, 35, 25), (12, 10, 38, 28), (20, 4, 35, 20)])
    ]
    with pytest.warns(UserWarning, match=r"3 of 3 boxes .* overran .* written as \[x1, y1, x2, y2\]"):
        CocoDetection(tmp_path / "img", _write_coco(tmp_path, data))


def test_one_box_over_the_edge_gives_no_warning(tmp_path: Path, recwarn) -> None:
    data = _coco_base()
    data["annotations"][0]["bbox"] = [-5, 20, 12, 10]
    CocoDetection(tmp_path / "img", _write_coco(tmp_path, data))
    assert not [w for w in recwarn if "overran" in str(w.message)]


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
