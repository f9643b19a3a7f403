"""A detection dataset for any COCO-format folder (the shapes data, COCO itself, your own data).

A COCO annotation file is JSON with three lists (cocodataset.org/#format-data)::

    images:      {"id", "file_name", "width", "height"}
    annotations: {"id", "image_id", "category_id", "bbox": [x, y, w, h], "iscrowd" (optional)}
    categories:  {"id", "name"}

:class:`CocoDetection` returns ``(image, target)`` pairs in torchvision's detection convention:
``image`` a float tensor ``[3, H, W]`` in [0, 1] and ``target = {"boxes": Tensor[N, 4] (x1, y1, x2, y2)
float32 pixels, "labels": Tensor[N] int64 in 0..K-1, "image_id": int}``.

What it does with the annotations, at load time:

* category ids (any integers) map to contiguous labels ``0..K-1`` in sorted-id order, since the
  sigmoid classification head needs no background slot;
* crowd annotations (``iscrowd=1``, one box around a group of objects) are left out of the targets,
  as torchvision does; COCOeval still sees them through :meth:`CocoDetection.coco_api`;
* boxes that poke out of the image are clipped to it; boxes entirely outside are an error;
* everything else that is wrong (missing keys, bad boxes, unknown ids, missing files) raises a
  ``ValueError`` or ``FileNotFoundError`` naming the file, the image and the annotation.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .transforms import Target, load_image

Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_CATEGORY_KEYS = ("id", "name")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(values: Any) -> str:
    """A bbox as written in the file, e.g. ``[5, 5, -3, 9]``."""
    return json.dumps(values) if isinstance(values, (list, tuple)) else repr(values)


def _missing_keys(entry: Any, keys: tuple[str, ...]) -> list[str]:
    if not isinstance(entry, dict):
        return list(keys)
    return [k for k in keys if k not in entry]


class CocoDetection(Dataset):
    """Images and boxes from a COCO annotation file.

    Boxes that poke out of their image are clipped to it; crowd annotations (``iscrowd=1``) are
    left out of the targets (as in torchvision). Images are listed in sorted image-id order.

    Args:
        image_dir: folder that ``file_name`` entries are relative to.
        ann_file: the COCO JSON file.
        transforms: optional callable ``(image, target) -> (image, target)``, e.g. a
            :class:`retina_edu.data.transforms.Compose`.

    Attributes:
        classes: category names by label (``classes[label]``).
        category_id_to_label: the file's category id -> contiguous label ``0..K-1``.
        label_to_category_id: the inverse mapping, for writing detections back in COCO ids.
        ids: image ids in dataset order (``dataset[i]`` is image ``ids[i]``).
        ann_file: path of the annotation file.
        image_dir: folder of the images.

    Raises:
        FileNotFoundError: ``ann_file``, ``image_dir`` or an image file does not exist.
        ValueError: the annotations are malformed (the message names the file, image and box).
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike,
                 transforms: Transforms | None = None) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self._coco = None
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"{self.ann_file}: annotation file not found")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir}: image folder not found (for {self.ann_file})")
        try:
            with open(self.ann_file, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.ann_file}: not a valid JSON file ({e})") from e
        self._parse(data)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, transforms: Transforms | None = None,
                    images: str = "images", annotations: str = "annotations.json") -> CocoDetection:
        """Open a folder laid out as ``root/annotations.json`` + ``root/images/`` (what make_shapes writes).

        Args:
            root: the folder.
            transforms: as in the constructor.
            images: name of the image sub-folder.
            annotations: name of the annotation file.
        """
        root = Path(root)
        return cls(root / images, root / annotations, transforms=transforms)

    # ----------------------------------------------------------------------------------------------

    def _parse(self, data: Any) -> None:
        where = str(self.ann_file)
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object with images/annotations/categories, "
                             f"got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{where}: missing top-level key {key!r}")
            if not isinstance(data[key], list):
                raise ValueError(f"{where}: {key!r} must be a list, got {type(data[key]).__name__}")

        # Categories -> contiguous labels in sorted-id order.
        names: dict[Any, str] = {}
        for i, cat in enumerate(data["categories"]):
            missing = _missing_keys(cat, _CATEGORY_KEYS)
            if missing:
                raise ValueError(f"{where}: category at index {i} is missing key {missing[0]!r}")
            if cat["id"] in names:
                raise ValueError(f"{where}: duplicate category id {cat['id']!r} (index {i})")
            names[cat["id"]] = str(cat["name"])
        try:
            sorted_ids = sorted(names)
        except TypeError as e:
            raise ValueError(f"{where}: category ids must be comparable integers ({e})") from e
        self.category_id_to_label: dict[int, int] = {cid: label for label, cid in enumerate(sorted_ids)}
        self.label_to_category_id: dict[int, int] = {label: cid for cid, label in self.category_id_to_label.items()}
        self.classes: list[str] = [names[cid] for cid in sorted_ids]

        # Images, indexed by id.
        images: dict[Any, dict[str, Any]] = {}
        for i, img in enumerate(data["images"]):
            missing = _missing_keys(img, _IMAGE_KEYS)
            if missing:
                name = "image"
                if isinstance(img, dict):
                    name += f" {img['id']!r}" if "id" in img else ""
                    name += f" ({img['file_name']!r})" if "file_name" in img else ""
                raise ValueError(f"{where}: {name} at index {i} is missing key {missing[0]!r}")
            label = f"image {img['id']!r} ({img['file_name']!r})"
            if img["id"] in images:
                raise ValueError(f"{where}: {label} at index {i}: duplicate image id {img['id']!r}")
            width, height = img["width"], img["height"]
            if not (_is_number(width) and _is_number(height) and width > 0 and height > 0):
                raise ValueError(f"{where}: {label}: width and height must be positive numbers, "
                                 f"got width={width!r}, height={height!r}")
            images[img["id"]] = img
        missing_files = [img for img in images.values() if not (self.image_dir / img["file_name"]).is_file()]
        if missing_files:
            img = missing_files[0]
            more = f" (and {len(missing_files) - 1} more images are missing)" if len(missing_files) > 1 else ""
            raise FileNotFoundError(f"{where}: image {img['id']!r} ({img['file_name']!r}): file "
                                    f"{self.image_dir / img['file_name']} does not exist{more}")

        # Annotations, grouped by image.
        boxes: dict[Any, list[list[float]]] = {image_id: [] for image_id in images}
        labels: dict[Any, list[int]] = {image_id: [] for image_id in images}
        seen_ids: set[Any] = set()
        self.num_crowd = 0
        for i, ann in enumerate(data["annotations"]):
            missing = _missing_keys(ann, _ANNOTATION_KEYS)
            if missing:
                name = f"annotation {ann.get('id')!r}" if isinstance(ann, dict) and "id" in ann else "annotation"
                raise ValueError(f"{where}: {name} (index {i}) is missing key {missing[0]!r}")
            if ann["image_id"] not in images:
                raise ValueError(f"{where}: annotation {ann['id']!r} (index {i}) refers to unknown image id "
                                 f"{ann['image_id']!r}")
            img = images[ann["image_id"]]
            at = f"{where}: image {img['id']!r} ({img['file_name']!r}), annotation {ann['id']!r} (index {i})"
            if ann["id"] in seen_ids:
                raise ValueError(f"{at}: duplicate annotation id {ann['id']!r}")
            seen_ids.add(ann["id"])
            if ann["category_id"] not in self.category_id_to_label:
                raise ValueError(f"{at}: unknown category id {ann['category_id']!r} (known: {sorted_ids})")
            bbox = ann["bbox"]
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise ValueError(f"{at}: bbox {_fmt(bbox)} must be 4 finite numbers [x, y, w, h]")
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                raise ValueError(f"{at}: bbox {_fmt(bbox)} has width or height <= 0 (w={w:g}, h={h:g})")
            W, H = float(img["width"]), float(img["height"])
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"{at}: bbox {_fmt(bbox)} lies entirely outside the {W:g}x{H:g} image")
            if ann.get("iscrowd", 0):
                self.num_crowd += 1
                continue
            boxes[img["id"]].append([x1, y1, x2, y2])
            labels[img["id"]].append(self.category_id_to_label[ann["category_id"]])

        try:
            self.ids: list[Any] = sorted(images)
        except TypeError:
            self.ids = list(images)
        self._images = [images[i] for i in self.ids]
        self._boxes = [np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4) for i in self.ids]
        self._labels = [np.asarray(labels[i], dtype=np.int64) for i in self.ids]

    # ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """K, the number of categories."""
        return len(self.classes)

    def image_info(self, index: int) -> dict[str, Any]:
        """The COCO ``images`` entry of ``dataset[index]`` (id, file_name, width, height, ...)."""
        return dict(self._images[index])

    def image_path(self, index: int) -> Path:
        """The file of ``dataset[index]``."""
        return self.image_dir / self._images[index]["file_name"]

    def get_target(self, index: int) -> Target:
        """The target of ``dataset[index]`` without reading the image or applying transforms."""
        return {
            "boxes": torch.from_numpy(self._boxes[index].copy()),
            "labels": torch.from_numpy(self._labels[index].copy()),
            "image_id": self._images[index]["id"],
        }

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        """Return ``(image Tensor[3, H, W] float32 in [0, 1], target)``, transformed if transforms were given.

        Raises:
            ValueError: the image file is unreadable, or its size differs from the annotation file.
        """
        info = self._images[index]
        path = self.image_path(index)
        try:
            image = load_image(path)
        except ValueError as e:
            raise ValueError(f"image {info['id']!r} ({info['file_name']!r}) of {self.ann_file}: {e}") from e
        if (image.shape[2], image.shape[1]) != (info["width"], info["height"]):
            raise ValueError(f"{path}: image {info['id']!r} is {image.shape[2]}x{image.shape[1]} pixels but "
                             f"{self.ann_file} says {info['width']}x{info['height']}")
        target = self.get_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_api(self):
        """A ``pycocotools.coco.COCO`` for the same file (for COCOeval), created once, without its prints."""
        if self._coco is None:
            from pycocotools.coco import COCO

            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(str(self.ann_file))
        return self._coco

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_coco"] = None  # DataLoader workers do not need (or pickle) the pycocotools index
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {self.num_classes} classes {self.classes}, "
                f"ann_file={str(self.ann_file)!r})")
