"""retina_edu.data.voc: VOCDetection reads Pascal VOC folders, and names what is wrong in bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_data_coco import _write_png  # a random PNG of a given size and mode (tests/ is on sys.path)
from torchvision.ops import box_convert

from retina_edu.data import VOCDetection, open_dataset


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
            parts.append(
                "<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, obj["box"]) if v is not None) + "</bndbox>"
            )
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
        "a.xml": _voc_xml(
            "a.png",
            [
                {"name": "dog", "box": (1, 1, 10, 12), "difficult": 0},
                {"name": "cat", "box": (5, 6, 20, 24), "difficult": 1},
            ],
        ),
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
    "xmax < xmin": (
        _voc_xml("a.png", [{"name": "dog", "box": (10, 1, 5, 12)}]),
        ["object 0 ('dog')", "xmin=10", "xmax=5", "xmax < xmin"],
    ),
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


def test_voc_class_name_variants_and_rare_names_are_warned_about(tmp_path: Path) -> None:
    files = {f"{k:03d}.xml": _voc_xml("a.png", [{"name": "dog", "box": (1, 1, 10, 12)}] * 60) for k in range(2)}
    files["100.xml"] = _voc_xml("b.png", [{"name": "Dog", "box": (1, 1, 10, 12)}])
    image_dir, ann_dir = _write_voc(tmp_path, files)
    # the two dog files share a.png: give each its own image
    _write_png(image_dir / "c.png", 32, 24)
    (ann_dir / "001.xml").write_text(files["001.xml"].replace("a.png", "c.png"))
    with pytest.warns(UserWarning) as record:
        dataset = VOCDetection(image_dir, ann_dir)
    messages = [str(w.message) for w in record]
    assert any("['Dog', 'dog'] differ only in case" in m for m in messages), messages
    assert any("very few objects" in m and "'Dog' (1)" in m and "120" in m for m in messages), messages
    assert dataset.classes == ["Dog", "dog"]  # the names as written: the user decides
    with pytest.raises(ValueError, match=r"100.xml: object 0 has name 'Dog', which is not in classes \['dog'\]"):
        VOCDetection(image_dir, ann_dir, classes=["dog"])


def test_voc_two_xml_files_naming_one_image_is_an_error_naming_both(tmp_path: Path) -> None:
    image_dir, ann_dir = _write_voc(tmp_path, {"a.xml": _voc_xml("a.png", []), "z.xml": _voc_xml("a.png", [])})
    with pytest.raises(ValueError) as info:
        VOCDetection(image_dir, ann_dir)
    assert str(ann_dir / "a.xml") in str(info.value) and str(ann_dir / "z.xml") in str(info.value)


@pytest.mark.parametrize("name", ["../a.png", "/etc/passwd"])
def test_voc_file_names_leaving_the_image_folder_are_refused(tmp_path: Path, name: str) -> None:
    image_dir, ann_dir = _write_voc(tmp_path, {"a.xml": _voc_xml(name, [])})
    _write_png(tmp_path / "a.png", 32, 24)
    with pytest.raises(ValueError, match=rf"a.xml: <filename>: file name {name!r} leaves the image folder"):
        VOCDetection(image_dir, ann_dir)


def test_voc_image_of_another_size_than_declared_is_found_when_opened(tmp_path: Path) -> None:
    image_dir, ann_dir = _write_voc(tmp_path, _voc_good())
    _write_png(image_dir / "b.png", 30, 24)
    with pytest.raises(ValueError, match=r"b.png is 30x24 pixels but .*b.xml says 32x24"):
        VOCDetection(image_dir, ann_dir)


def test_open_dataset_passes_the_class_list_to_voc(tmp_path: Path) -> None:
    _write_voc(tmp_path, _voc_good())
    assert open_dataset(tmp_path, classes=["dog", "cat"]).classes == ["dog", "cat"]
    with pytest.raises(ValueError, match="'cat', which is not in classes"):
        open_dataset(tmp_path, classes=["dog"])
