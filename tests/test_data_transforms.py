"""retina_edu.data.transforms: boxes move with the pixels, as torchvision's v2 transforms move them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from retina_edu.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CocoDetection,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    collate_fn,
)


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
