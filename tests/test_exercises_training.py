"""retina_edu.exercises.training: the checks of notebook 08's exercises (the learning rate, missed objects)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from retina_edu.boxes import box_iou
from retina_edu.exercises.training import check_answer_lr, check_misses


@pytest.fixture(autouse=True)
def _not_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


def test_answer_lr_right_stub_and_wrong(capsys):
    check_answer_lr(0.005)
    assert (
        capsys.readouterr().out == "Exercise 1 (the learning rate): correct, 4 GPUs x 2 images = 8 per step: lr 0.005\n"
    )
    check_answer_lr(None)
    assert capsys.readouterr().out == "Exercise 1 (the learning rate): not attempted yet\n"
    with pytest.raises(AssertionError, match="the rate for the 2 images of one GPU") as err:
        check_answer_lr(0.01 * 2 / 16)
    assert "0.005" not in str(err.value)
    with pytest.raises(AssertionError, match=r"answer_lr = 0.01 is too large") as err:
        check_answer_lr(0.01)
    assert "0.005" not in str(err.value)
    with pytest.raises(AssertionError, match="should be a number"):
        check_answer_lr("half")


class FakeDetector:
    """Stands in for the trained model: ``model([image])`` -> one detection dict, read from a table
    keyed by the image's first pixel (the image's index)."""

    def __init__(self, detections):
        self.detections = detections

    def __call__(self, images):
        (image,) = images
        return [self.detections[int(round(image[0, 0, 0].item() * 100))]]


@pytest.fixture(scope="module")
def images_and_detector():
    """25 images (the check reads the first 10), each with 0 to 5 objects, and detections that
    find some (some with the wrong class), miss others, score some below 0.4 and add clutter."""
    gen = torch.Generator().manual_seed(0)
    dataset, detections = [], []
    for i in range(25):
        n = i % 6
        xy = 100 * torch.rand(n, 2, generator=gen)
        boxes = torch.cat([xy, xy + 10 + 40 * torch.rand(n, 2, generator=gen)], dim=1)
        labels = torch.randint(0, 4, (n,), generator=gen)
        dataset.append((torch.full((3, 8, 8), i / 100), {"boxes": boxes, "labels": labels}))
        shift = torch.where(torch.rand(n, 1, generator=gen) < 0.7, 1.0, 12.0)  # 30%: off target
        det_boxes = torch.cat([boxes + shift, 150 * torch.rand(3, 4, generator=gen).sort(dim=1).values])
        scores = torch.rand(n + 3, generator=gen)
        det_labels = torch.cat([(labels + (torch.rand(n, generator=gen) < 0.3)) % 4, torch.zeros(3, dtype=torch.long)])
        detections.append({"boxes": det_boxes, "scores": scores, "labels": det_labels})
    return dataset, FakeDetector(detections)


def make_misses(dataset, model, score=0.4, iou=0.5, same_class=False):
    """The notebook's solution, and the usual slips with other arguments."""

    def misses(i):
        image, target = dataset[i]
        with torch.no_grad():
            (det,) = model([image])
        keep = det["scores"] >= score
        boxes, labels = det["boxes"][keep], det["labels"][keep]
        if len(target["boxes"]) == 0:
            return 0
        if len(boxes) == 0:
            return len(target["boxes"])
        overlap = box_iou(target["boxes"], boxes) >= iou
        if same_class:
            overlap &= target["labels"][:, None] == labels[None, :]
        return int((~overlap.any(dim=1)).sum())

    return misses


def test_misses_right_stub_and_wrong(images_and_detector, capsys):
    dataset, model = images_and_detector
    check_misses(make_misses(dataset, model), model, dataset)
    assert capsys.readouterr().out == (
        "Exercise 2 (missed objects): correct, your counts match retina_edu.analysis.missed_objects on the "
        "first 10 validation images\n"
    )

    def stub(i):
        """The student edition's stub."""
        # YOUR CODE HERE

    check_misses(stub, model, dataset)
    assert capsys.readouterr().out == "Exercise 2 (missed objects): not attempted yet\n"


@pytest.mark.parametrize(
    "slip, side",
    [({"same_class": True}, "too large"), ({"score": 0.0}, "too small"), ({"iou": 0.9}, "too large")],
)
def test_misses_with_a_slip_says_which_image_and_which_way(images_and_detector, slip, side):
    dataset, model = images_and_detector
    with pytest.raises(
        AssertionError, match=rf"^Exercise 2 \(missed objects\): misses\((\d+)\) = \d+ is {side}"
    ) as err:
        check_misses(make_misses(dataset, model, **slip), model, dataset)
    i = int(re.search(r"misses\((\d+)\)", str(err.value)).group(1))
    right = make_misses(dataset, model)(i)
    assert f"= {right} " not in str(err.value)


def test_misses_on_a_real_detector(tiny_shapes: Path, capsys):
    """The check runs a real RetinaNet the way notebook 08 does (a small untrained one whose prior
    is raised to 0.6, so that it detects things above 0.4)."""
    from retina_edu.data import CocoDetection
    from retina_edu.model import RetinaNet
    from retina_edu.train import Preset

    torch.manual_seed(0)
    dataset = CocoDetection.from_folder(tiny_shapes)
    # untrained, every anchor scores about 0.6; 96 px inputs (the images' own size) for speed
    preset = Preset.cpu(prior_probability=0.6, image_size=96)
    model = RetinaNet(config=preset.model_config(num_classes=dataset.num_classes)).eval()
    misses = make_misses(dataset, model)
    counts = [misses(i) for i in range(10)]
    totals = [len(dataset[i][1]["boxes"]) for i in range(10)]
    assert 0 < sum(counts) < sum(totals)  # it finds some objects and misses others
    check_misses(misses, model, dataset)
    assert "correct" in capsys.readouterr().out
