"""retina_edu.evaluate: COCO mAP is pycocotools' COCOeval, scored against the ground truth training uses."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import Subset
from torchvision.ops import box_iou

from retina_edu.data import CocoDetection, VOCDetection
from retina_edu.evaluate import METRIC_NAMES, _images_only_collate, coco_map_from_predictions

ONE = pytest.approx(1.0, abs=1e-12)  # COCOeval's means of 101 ones are 1 up to rounding


def _write_png(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _own_targets(dataset, indices=None) -> tuple[list, list[dict]]:
    """Every image's target as detections (score 1), in the form predict() returns."""
    ids, detections = [], []
    for index in range(len(dataset)) if indices is None else indices:
        target = dataset.get_target(index)
        ids.append(target["image_id"])
        detections.append(
            {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(len(target["labels"]))}
        )
    return ids, detections


def _single_box_dataset(tmp_path: Path) -> CocoDetection:
    _write_png(tmp_path / "img" / "a.png", 64, 48)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return CocoDetection(tmp_path / "img", tmp_path / "ann.json")


def test_ground_truth_as_detections_scores_ap_one(tiny_shapes: Path) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes)
    result = coco_map_from_predictions(*_own_targets(dataset), dataset)
    assert [result.AP, result.AP50, result.AP75] == [ONE] * 3
    assert list(result.per_class.values()) == [ONE] * dataset.num_classes


def test_a_box_shifted_to_iou_0_6_counts_at_iou_0_5_and_not_at_0_75(tmp_path: Path) -> None:
    dataset = _single_box_dataset(tmp_path)
    truth = dataset.get_target(0)["boxes"]  # [10, 10, 30, 30]
    shifted = truth + torch.tensor([5.0, 0.0, 5.0, 0.0])  # overlap 15 x 20 = 300, union 500
    assert float(box_iou(truth, shifted)) == pytest.approx(0.6)
    detections = [{"boxes": shifted, "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}]
    result = coco_map_from_predictions([1], detections, dataset)
    assert result.AP50 == ONE and result.AP75 == 0.0
    assert result.AP == pytest.approx(0.3)  # IoU thresholds 0.50, 0.55, 0.60 of ten
    recall, precision = result.pr_curve(0, iou=0.5)
    assert recall.shape == precision.shape == (101,) and recall[-1] == 1.0
    np.testing.assert_allclose(precision, 1.0, atol=1e-12)
    assert np.all(result.pr_curve(0, iou=0.75)[1] == 0.0)
    with pytest.raises(ValueError, match="0.50, 0.55"):
        result.pr_curve(0, iou=0.52)


def test_metrics_equal_cocoeval_run_on_the_file_itself(tiny_shapes: Path) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes)
    generator = torch.Generator().manual_seed(0)
    ids, detections = _own_targets(dataset)
    for det in detections:  # jitter the boxes, add a false positive, random scores
        det["boxes"] = torch.cat(
            [
                det["boxes"] + 6 * torch.randn(det["boxes"].shape, generator=generator),
                torch.tensor([[5.0, 5.0, 40.0, 40.0]]),
            ]
        ).clamp(0, 96)
        det["labels"] = torch.cat([det["labels"], torch.tensor([1])])
        det["scores"] = torch.rand(len(det["labels"]), generator=generator)
    result = coco_map_from_predictions(ids, detections, dataset)

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tiny_shapes / "annotations.json"))
        results = [
            {"image_id": i, "category_id": int(label) + 1, "score": float(score), "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for i, det in zip(ids, detections)
            for (x1, y1, x2, y2), label, score in zip(det["boxes"].tolist(), det["labels"], det["scores"])
        ]
        reference = COCOeval(coco, coco.loadRes(results), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert 0.05 < result.AP < 0.95
    np.testing.assert_allclose([getattr(result, n) for n in METRIC_NAMES], reference.stats[:6], atol=1e-6)


def test_a_subset_scores_only_its_own_images(tiny_shapes: Path) -> None:
    dataset = CocoDetection.from_folder(tiny_shapes)
    inner = Subset(dataset, [9, 3, 5, 7, 11])
    subset = Subset(inner, [1, 2, 3])  # images 3, 5, 7 of the dataset
    ids, detections = _own_targets(dataset, [3, 5, 7])
    assert coco_map_from_predictions(ids, detections, subset).AP == ONE
    # Detections missing for image 7: only the objects of images 3, 5 and 7 are counted.
    partial = coco_map_from_predictions(ids, detections[:2] + [{k: v[:0] for k, v in detections[2].items()}], subset)
    found = sum(len(d["labels"]) for d in detections[:2])
    assert len(detections[2]["labels"]) > 0 and 0 < partial.AP50 < 1.0
    assert partial.AP50 <= found / (found + len(detections[2]["labels"])) + 1e-6


def test_voc_path_scores_ap_one_and_ignores_difficult_objects(tmp_path: Path) -> None:
    image_dir, ann_dir = tmp_path / "JPEGImages", tmp_path / "Annotations"
    ann_dir.mkdir(parents=True)
    for name, objects in (
        ("a", [("dog", (1, 1, 10, 12), 0), ("cat", (5, 6, 20, 24), 1)]),
        ("b", [("cat", (3, 4, 30, 20), 0), ("dog", (0, 20, 40, 30), 0)]),
    ):
        _write_png(image_dir / f"{name}.png", 32, 24)
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects
        )
        (ann_dir / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.png</filename><size><width>32</width>"
            f"<height>24</height></size>{xml}</annotation>"
        )
    dataset = VOCDetection(image_dir, ann_dir)
    ids, detections = _own_targets(dataset)
    assert coco_map_from_predictions(ids, detections, dataset).AP == ONE
    # A detection on the difficult cat is neither a hit nor a false positive.
    detections[0] = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 12.0], [4.0, 5.0, 20.0, 24.0]]),
        "labels": torch.tensor([1, 0]),
        "scores": torch.tensor([0.5, 0.9]),
    }
    assert coco_map_from_predictions(ids, detections, dataset).AP == ONE


def _awkward_coco(tmp_path: Path) -> Path:
    """What the reader accepts and raw pycocotools does not score right: string ids, no area/iscrowd,
    boxes poking out of the image, a crowd box."""
    _write_png(tmp_path / "img" / "a.png", 32, 24)
    _write_png(tmp_path / "img" / "b.png", 40, 30)
    data = {
        "images": [
            {"id": "img-a", "file_name": "a.png", "width": 32, "height": 24},
            {"id": "img-b", "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": "x", "image_id": "img-a", "category_id": 7, "bbox": [-5, 2, 15, 10]},
            {"id": "y", "image_id": "img-a", "category_id": 3, "bbox": [20, 14, 20, 20]},
            {"id": "z", "image_id": "img-b", "category_id": 7, "bbox": [1, 1, 38, 28], "area": 500.0},
            {"id": "w", "image_id": "img-b", "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path / "ann.json"


def _awkward_voc(tmp_path: Path) -> Path:
    image_dir, ann_dir = tmp_path / "JPEGImages", tmp_path / "Annotations"
    ann_dir.mkdir(parents=True)
    _write_png(image_dir / "a.png", 32, 24)
    objects = [("dog", (-3, 1, 10, 12)), ("cat", (20, 10, 45, 40))]
    xml = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    (ann_dir / "a.xml").write_text(f"<annotation><filename>a.png</filename>{xml}</annotation>")  # no <size>
    return tmp_path


@pytest.mark.parametrize("make", ["shapes", "awkward coco", "awkward voc"])
def test_every_accepted_dataset_scores_its_own_targets_ap_one(tmp_path: Path, tiny_shapes: Path, make: str) -> None:
    if make == "shapes":
        dataset = CocoDetection.from_folder(tiny_shapes)
    elif make == "awkward coco":
        dataset = CocoDetection(tmp_path / "img", _awkward_coco(tmp_path))
    else:
        root = _awkward_voc(tmp_path)
        dataset = VOCDetection(root / "JPEGImages", root / "Annotations")
    result = coco_map_from_predictions(*_own_targets(dataset), dataset)
    assert [result.AP, result.AP50, result.AP75] == [ONE] * 3, result


def test_the_evaluation_index_holds_the_clipped_boxes_and_the_files_areas(tmp_path: Path) -> None:
    dataset = CocoDetection(tmp_path / "img", _awkward_coco(tmp_path))
    coco = dataset.coco_api()
    anns = coco.dataset["annotations"]
    assert [a["bbox"] for a in anns] == [
        [0.0, 2.0, 10.0, 10.0],
        [20.0, 14.0, 12.0, 10.0],
        [1.0, 1.0, 38.0, 28.0],
        [5.0, 5.0, 10.0, 10.0],
    ]
    assert [a["area"] for a in anns] == [100.0, 120.0, 500.0, 100.0] and [a["iscrowd"] for a in anns] == [0, 0, 0, 1]
    assert sorted(coco.getImgIds()) == [0, 1] and dataset.coco_image_ids(["img-b"]) == [1]


def test_string_image_ids_pass_through_the_collate() -> None:
    image = torch.zeros(3, 4, 4)
    images, ids = _images_only_collate([(image, {"image_id": "img-a"}), (image, {"image_id": torch.tensor(7)})])
    assert ids == ["img-a", 7] and len(images) == 2
