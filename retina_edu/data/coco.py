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
* boxes that poke out of the image are clipped to it; boxes entirely outside are an error; when a
  large share had to be clipped, a warning asks whether they are written as ``[x1, y1, x2, y2]``;
* every image's header is read (size as declared, readable, supported mode, not oversized);
* everything else that is wrong (missing keys, bad boxes, unknown ids, missing files, two images of
  one file, file names leaving the image folder) raises a ``ValueError`` or ``FileNotFoundError``
  naming the file, the image and the annotation.

COCOeval scores against :meth:`CocoDetection.coco_api`, built from the same validated, clipped boxes
(``area`` defaults to the box's, ``iscrowd`` to 0). Image and category ids are the file's when they
are integers (as in COCO itself); otherwise the dataset index and ``label + 1``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import DetectionDataset, Transforms, check_relative_file_name, clipped_share_warning

__all__ = ["CocoDetection", "Transforms"]

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_CATEGORY_KEYS = ("id", "name")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _fmt(values: Any) -> str:
    """A bbox as written in the file, e.g. ``[5, 5, -3, 9]``."""
    return json.dumps(values) if isinstance(values, (list, tuple)) else repr(values)


def _missing_keys(entry: Any, keys: tuple[str, ...]) -> list[str]:
    if not isinstance(entry, dict):
        return list(keys)
    return [k for k in keys if k not in entry]


class CocoDetection(DetectionDataset):
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
        num_crowd: how many crowd annotations were left out of the targets.
        ann_file: path of the annotation file.
        image_dir: folder of the images.

    Raises:
        FileNotFoundError: ``ann_file``, ``image_dir`` or an image file does not exist.
        ValueError: the annotations are malformed, or an image is unreadable or of another size
            than declared (the message names the file, image and box).
    """

    def __init__(
        self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, transforms: Transforms | None = None
    ) -> None:
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
        self.check_images()

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        transforms: Transforms | None = None,
        images: str = "images",
        annotations: str = "annotations.json",
    ) -> CocoDetection:
        """Open a folder laid out as ``root/annotations.json`` + ``root/images/`` (what make_shapes writes).

        Args:
            root: the folder.
            transforms: as in the constructor.
            images: name of the image sub-folder.
            annotations: name of the annotation file.
        """
        root = Path(root)
        return cls(root / images, root / annotations, transforms=transforms)

    # -- parsing ---------------------------------------------------------------------------------------

    def _parse(self, data: Any) -> None:
        """Check the top level of the file, then read its categories, images and annotations in turn."""
        where = str(self.ann_file)
        if not isinstance(data, dict):
            raise ValueError(
                f"{where}: expected a JSON object with images/annotations/categories, got {type(data).__name__}"
            )
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{where}: missing top-level key {key!r}")
            if not isinstance(data[key], list):
                raise ValueError(f"{where}: {key!r} must be a list, got {type(data[key]).__name__}")
        self._parse_categories(data["categories"])
        images = self._parse_images(data["images"])
        self._parse_annotations(data["annotations"], images)
        # COCOeval needs integer ids: the file's when they are (COCO's own), else index and label + 1.
        self._integer_image_ids = all(_is_int(i) for i in self.ids)
        self._integer_category_ids = all(_is_int(c) for c in self.label_to_category_id.values())
        self._index_of_id = {image_id: index for index, image_id in enumerate(self.ids)}

    def _parse_categories(self, categories: list[Any]) -> None:
        """Map category ids (any comparable values) to contiguous labels ``0..K-1`` in sorted-id order.

        Sets ``classes``, ``category_id_to_label`` and ``label_to_category_id``.
        """
        where = str(self.ann_file)
        names: dict[Any, str] = {}
        for i, cat in enumerate(categories):
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
        self.category_id_to_label: dict[Any, int] = {cid: label for label, cid in enumerate(sorted_ids)}
        self.label_to_category_id: dict[int, Any] = {label: cid for cid, label in self.category_id_to_label.items()}
        self.classes: list[str] = [names[cid] for cid in sorted_ids]

    def _parse_images(self, entries: list[Any]) -> dict[Any, dict[str, Any]]:
        """Check the ``images`` entries (keys, sizes, unique ids and files, files inside ``image_dir``).

        Sets ``ids`` (sorted when the ids are comparable, else in file order) and returns the entries by id.
        """
        where = str(self.ann_file)
        images: dict[Any, dict[str, Any]] = {}
        by_file: dict[str, Any] = {}
        for i, img in enumerate(entries):
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
                raise ValueError(
                    f"{where}: {label}: width and height must be positive numbers, "
                    f"got width={width!r}, height={height!r}"
                )
            if not isinstance(img["file_name"], str):
                raise ValueError(f"{where}: {label}: file_name must be a string")
            check_relative_file_name(img["file_name"], f"{where}: {label}")
            # Two entries of one file would train on the same pixels twice, with different boxes.
            file_key = Path(img["file_name"]).as_posix()
            if file_key in by_file:
                raise ValueError(
                    f"{where}: images {by_file[file_key]!r} and {img['id']!r} share the file_name "
                    f"{img['file_name']!r}; give each image its own file, or merge their annotations"
                )
            by_file[file_key] = img["id"]
            images[img["id"]] = img
        missing_files = [img for img in images.values() if not (self.image_dir / img["file_name"]).is_file()]
        if missing_files:
            img = missing_files[0]
            more = f" (and {len(missing_files) - 1} more images are missing)" if len(missing_files) > 1 else ""
            raise FileNotFoundError(
                f"{where}: image {img['id']!r} ({img['file_name']!r}): file "
                f"{self.image_dir / img['file_name']} does not exist{more}"
            )
        try:
            self.ids: list[Any] = sorted(images)
        except TypeError:
            self.ids = list(images)
        self._images = [images[i] for i in self.ids]
        return images

    def _parse_annotations(self, entries: list[Any], images: dict[Any, dict[str, Any]]) -> None:
        """Check each annotation, clip its box to the image and group the boxes by image.

        Sets ``_boxes``/``_labels`` (targets: crowd left out), ``num_crowd`` and ``_gt`` (every
        annotation as COCOeval should see it); warns when a large share of boxes had to be clipped.
        """
        where = str(self.ann_file)
        index_of = {image_id: index for index, image_id in enumerate(self.ids)}
        boxes: list[list[list[float]]] = [[] for _ in self.ids]
        labels: list[list[int]] = [[] for _ in self.ids]
        # (image index, label, [x, y, w, h] clipped, area, iscrowd) of every annotation, crowd included
        self._gt: list[tuple[int, int, list[float], float, int]] = []
        seen_ids: set[Any] = set()
        self.num_crowd = num_clipped = 0
        for i, ann in enumerate(entries):
            img, at = self._check_annotation(i, ann, images, seen_ids)
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
            # Up to a pixel over the edge is common rounding in real files (COCO has many); more is clipping.
            num_clipped += max(x1 - x, y1 - y, x + w - x2, y + h - y2) > 1.0
            area = ann.get("area")
            if area is not None and not (_is_number(area) and area >= 0):
                raise ValueError(f"{at}: area {area!r} must be a number >= 0 (or left out)")
            clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
            # Unclipped boxes are kept exactly as written, so COCOeval sees what pycocotools would read.
            xywh = [x1, y1, x2 - x1, y2 - y1] if clipped else [x, y, w, h]
            crowd = int(bool(ann.get("iscrowd", 0)))
            index, label = index_of[img["id"]], self.category_id_to_label[ann["category_id"]]
            self._gt.append((index, label, xywh, float(area) if area is not None else xywh[2] * xywh[3], crowd))
            if crowd:
                self.num_crowd += 1
                continue
            boxes[index].append([x1, y1, x2, y2])
            labels[index].append(label)
        warning = clipped_share_warning(num_clipped, len(self._gt), where)
        if warning is not None:
            warnings.warn(warning, stacklevel=4)
        self._boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]
        self._labels = [np.asarray(lab, dtype=np.int64) for lab in labels]

    def _check_annotation(
        self, i: int, ann: Any, images: dict[Any, dict[str, Any]], seen_ids: set[Any]
    ) -> tuple[dict[str, Any], str]:
        """Annotation ``i``'s keys, image, id (added to ``seen_ids``) and category checked; its image
        and the words that name it in an error."""
        where = str(self.ann_file)
        missing = _missing_keys(ann, _ANNOTATION_KEYS)
        if missing:
            name = f"annotation {ann.get('id')!r}" if isinstance(ann, dict) and "id" in ann else "annotation"
            raise ValueError(f"{where}: {name} (index {i}) is missing key {missing[0]!r}")
        if ann["image_id"] not in images:
            raise ValueError(
                f"{where}: annotation {ann['id']!r} (index {i}) refers to unknown image id {ann['image_id']!r}"
            )
        img = images[ann["image_id"]]
        at = f"{where}: image {img['id']!r} ({img['file_name']!r}), annotation {ann['id']!r} (index {i})"
        if ann["id"] in seen_ids:
            raise ValueError(f"{at}: duplicate annotation id {ann['id']!r}")
        seen_ids.add(ann["id"])
        if ann["category_id"] not in self.category_id_to_label:
            known = list(self.category_id_to_label)
            raise ValueError(f"{at}: unknown category id {ann['category_id']!r} (known: {known})")
        return img, at

    # -- what the base class asks for ------------------------------------------------------------------

    def image_info(self, index: int) -> dict[str, Any]:
        """The COCO ``images`` entry of ``dataset[index]`` (id, file_name, width, height, ...)."""
        return dict(self._images[index])

    def image_path(self, index: int) -> Path:
        """The file of ``dataset[index]``."""
        return self.image_dir / self._images[index]["file_name"]

    def _image_size(self, index: int) -> tuple[int | float, int | float]:
        return self._images[index]["width"], self._images[index]["height"]

    def _image_id(self, index: int) -> Any:
        return self._images[index]["id"]

    def _source(self, index: int) -> str:
        info = self._images[index]
        return f"{self.ann_file} (image {info['id']!r}, {info['file_name']!r})"

    def coco_image_id(self, image_id: Any) -> int:
        return int(image_id) if self._integer_image_ids else self._index_of_id[image_id]

    def coco_category_id(self, label: int) -> int:
        return int(self.label_to_category_id[label]) if self._integer_category_ids else label + 1

    def coco_dict(self) -> dict[str, Any]:
        """The validated annotations in COCO format, crowd included (``iscrowd=1``), boxes clipped.

        Image and category ids are the file's when they are integers, else the dataset index and
        ``label + 1`` (see :meth:`coco_image_id`, :meth:`coco_category_id`).
        """
        images = [
            {
                "id": self.coco_image_id(info["id"]),
                "file_name": info["file_name"],
                "width": info["width"],
                "height": info["height"],
            }
            for info in self._images
        ]
        annotations = [
            {
                "id": n + 1,
                "image_id": images[index]["id"],
                "category_id": self.coco_category_id(label),
                "bbox": list(xywh),
                "area": area,
                "iscrowd": crowd,
            }
            for n, (index, label, xywh, area, crowd) in enumerate(self._gt)
        ]
        categories = [{"id": self.coco_category_id(label), "name": name} for label, name in enumerate(self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {self.num_classes} classes {self.classes}, "
            f"ann_file={str(self.ann_file)!r})"
        )
