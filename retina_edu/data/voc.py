"""A detection dataset for Pascal VOC style folders: one XML file per image.

Each XML file looks like (host.robots.ox.ac.uk/pascal/VOC)::

    <annotation>
      <filename>000005.jpg</filename>
      <size><width>500</width><height>375</height></size>
      <object>
        <name>chair</name>
        <difficult>0</difficult>
        <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox>
      </object>
    </annotation>

:class:`VOCDetection` returns the same ``(image, target)`` pairs as
:class:`retina_edu.data.CocoDetection`. Conventions:

* VOC coordinates are 1-based pixel indices and inclusive: ``xmin=1, xmax=W`` covers the whole
  image. They become continuous 0-based coordinates by subtracting 1 from ``xmin`` and ``ymin`` only
  (as Detectron2 does), so that box covers ``[0, W]``.
* objects marked ``<difficult>1</difficult>`` are left out of the targets (VOC's own evaluation
  ignores them); :meth:`VOCDetection.coco_api` keeps them as ``iscrowd=1`` so COCOeval ignores
  detections on them instead of counting them as false positives.
* boxes that poke out of the image are clipped to it; boxes entirely outside are an error.
* ``target["image_id"]`` is the dataset index; the file stem is in ``ids``.
* class names are taken as written: pass ``classes=`` to fix the list, so that a typo (``dgo``) or a
  case variant (``Dog``) is an error naming the file instead of a new class. Without it, names that
  differ only in case, and classes with very few objects, are warned about.
* every image's header is read when the dataset is opened; two XML files naming one image file, and
  ``<filename>`` entries leaving the image folder, are errors.
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import DetectionDataset, Transforms, check_relative_file_name
from .images import image_header

__all__ = ["RARE_CLASS_SHARE", "VOCDetection"]

RARE_CLASS_SHARE = 0.01
"""Warn about a class (found in the files, not given) with fewer objects than this share of the most
common class's: most often a typo of another class's name."""


@dataclass
class _VOCObject:
    name: str
    box: tuple[float, float, float, float]  # 0-based continuous (x1, y1, x2, y2), clipped
    difficult: bool
    index: int


@dataclass
class _VOCImage:
    xml: Path
    path: Path
    width: int
    height: int
    objects: list[_VOCObject]


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: <{tag}> is {text!r}, not a finite number")
    return value


def _parse_xml(xml: Path, image_dir: Path) -> _VOCImage:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml}: not a valid XML file ({e})") from e
    filename = _text(root, "filename", str(xml))
    check_relative_file_name(filename, f"{xml}: <filename>")
    path = image_dir / filename
    if not path.is_file():
        raise FileNotFoundError(f"{xml}: image file {path} (from <filename>) does not exist")
    size = root.find("size")
    width = height = 0.0
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        width = _number(size, "width", f"{xml}: <size>")
        height = _number(size, "height", f"{xml}: <size>")
    if width <= 0 or height <= 0:
        # Some tools write no <size> or a zero size; the image header tells (without decoding it).
        try:
            header = image_header(path)
        except ValueError as e:
            raise ValueError(f"{xml}: no usable <size>, and {e}") from e
        width, height = header.width, header.height
    objects = []
    for j, obj in enumerate(root.findall("object")):
        where = f"{xml}: object {j}"
        name = _text(obj, "name", where)
        where = f"{xml}: object {j} ({name!r})"
        difficult_text = obj.findtext("difficult", default="0").strip() or "0"
        if difficult_text not in ("0", "1"):
            raise ValueError(f"{where}: <difficult> is {difficult_text!r}, expected 0 or 1")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{where}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, tag, f"{where} <bndbox>") for tag in ("xmin", "ymin", "xmax", "ymax"))
        values = f"[xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}]"
        if xmax < xmin:
            raise ValueError(f"{where}: box {values} has xmax < xmin")
        if ymax < ymin:
            raise ValueError(f"{where}: box {values} has ymax < ymin")
        # 1-based inclusive pixel indices -> 0-based continuous coordinates (Detectron2's convention).
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{where}: box {values} lies entirely outside the {width:g}x{height:g} image")
        objects.append(_VOCObject(name, (x1, y1, x2, y2), difficult_text == "1", j))
    return _VOCImage(xml, path, int(width), int(height), objects)


class VOCDetection(DetectionDataset):
    """Images and boxes from a folder of Pascal VOC XML files.

    Difficult objects are left out of the targets; boxes poking out of the image are clipped; VOC's
    1-based coordinates become 0-based by subtracting 1 from xmin and ymin (see the module docstring).

    Args:
        image_dir: folder that ``<filename>`` entries are relative to (VOC's ``JPEGImages``).
        annotation_dir: folder of ``*.xml`` files (VOC's ``Annotations``); all of them are read,
            in sorted order.
        classes: class names by label; ``None`` takes the sorted names found in the files (and
            warns about names differing only in case, and about very rare names).
            An object whose name is not in ``classes`` is an error.
        transforms: optional callable ``(image, target) -> (image, target)``.

    Attributes:
        classes: class names by label.
        ids: XML file stems in dataset order.
        label_to_category_id: ``label -> label + 1`` (the ids used by :meth:`coco_api`).
        category_id_to_label: the inverse mapping.

    Raises:
        FileNotFoundError: a folder or an image file does not exist.
        ValueError: an XML file is malformed, or an image is unreadable or of another size than
            declared (the message names the file, the object and the box).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotation_dir: str | os.PathLike,
        classes: Sequence[str] | None = None,
        transforms: Transforms | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_dir = Path(annotation_dir)
        self.transforms = transforms
        self._coco = None
        for folder in (self.image_dir, self.annotation_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: folder not found")
        xml_files = sorted(self.annotation_dir.glob("*.xml"))
        if not xml_files:
            raise ValueError(f"{self.annotation_dir}: no .xml annotation files")
        self._records = [_parse_xml(xml, self.image_dir) for xml in xml_files]
        self.ids: list[str] = [xml.stem for xml in xml_files]
        _check_unique_files(self._records)
        self.classes: list[str] = _resolve_classes(self._records, classes, self.annotation_dir)
        label_of = {name: label for label, name in enumerate(self.classes)}
        self.label_to_category_id = {label: label + 1 for label in range(len(self.classes))}
        self.category_id_to_label = {cid: label for label, cid in self.label_to_category_id.items()}
        self._boxes, self._labels = [], []
        for rec in self._records:
            kept = [obj for obj in rec.objects if not obj.difficult]
            self._boxes.append(np.asarray([obj.box for obj in kept], dtype=np.float32).reshape(-1, 4))
            self._labels.append(np.asarray([label_of[obj.name] for obj in kept], dtype=np.int64))
        self.check_images()

    # -- what the base class asks for ------------------------------------------------------------------

    def image_path(self, index: int) -> Path:
        """The image file of ``dataset[index]``."""
        return self._records[index].path

    def _image_size(self, index: int) -> tuple[int, int]:
        return self._records[index].width, self._records[index].height

    def _image_id(self, index: int) -> int:
        return index

    def _source(self, index: int) -> str:
        return str(self._records[index].xml)

    def coco_image_id(self, image_id: Any) -> int:
        return int(image_id)

    def coco_dict(self) -> dict[str, Any]:
        """The annotations in COCO format (image id = dataset index, category id = label + 1).

        Difficult objects are kept with ``iscrowd=1``, which COCOeval treats as "ignore".
        """
        images, annotations = [], []
        label_of = {name: label for label, name in enumerate(self.classes)}
        for i, rec in enumerate(self._records):
            images.append({"id": i, "file_name": rec.path.name, "width": rec.width, "height": rec.height})
            for obj in rec.objects:
                x1, y1, x2, y2 = obj.box
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i,
                        "category_id": self.label_to_category_id[label_of[obj.name]],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(obj.difficult),
                    }
                )
        categories = [{"id": self.label_to_category_id[label], "name": name} for label, name in enumerate(self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {self.num_classes} classes {self.classes}, "
            f"annotation_dir={str(self.annotation_dir)!r})"
        )


def _check_unique_files(records: list[_VOCImage]) -> None:
    """Two XML files naming one image would train on the same pixels twice, with different boxes."""
    first: dict[Path, Path] = {}
    for rec in records:
        if rec.path in first:
            raise ValueError(
                f"{first[rec.path]} and {rec.xml} both annotate {rec.path}; keep one XML file per "
                f"image (merge their objects)"
            )
        first[rec.path] = rec.xml


def _resolve_classes(records: list[_VOCImage], classes: Sequence[str] | None, folder: Path) -> list[str]:
    """The class list: the given one (every object's name must be in it), or the sorted names found.

    Names found in the files are checked for the usual slips: two names differing only in case or
    surrounding spaces, and classes with fewer than ``RARE_CLASS_SHARE`` of the largest class's objects.
    """
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError(f"VOCDetection: classes contains duplicates: {classes}")
        known = set(classes)
        for rec in records:
            for obj in rec.objects:
                if obj.name not in known:
                    raise ValueError(
                        f"{rec.xml}: object {obj.index} has name {obj.name!r}, which is not "
                        f"in classes {classes}; fix the name, or add it to classes"
                    )
        return classes
    counts = Counter(obj.name for rec in records for obj in rec.objects)
    by_folded: dict[str, list[str]] = {}
    for name in sorted(counts):
        by_folded.setdefault(name.strip().casefold(), []).append(name)
    for variants in by_folded.values():
        if len(variants) > 1:
            warnings.warn(
                f"{folder}: class names {variants} differ only in case or spaces and become "
                f"{len(variants)} classes; fix the XML files or pass classes=[...]",
                stacklevel=3,
            )
    if counts:
        most = max(counts.values())
        rare = sorted(name for name, n in counts.items() if n < RARE_CLASS_SHARE * most)
        if rare:
            found = ", ".join(f"{name!r} ({counts[name]})" for name in rare)
            warnings.warn(
                f"{folder}: classes with very few objects (a typo?): {found}, against {most} of the "
                f"most common class; fix the XML files or pass classes=[...]",
                stacklevel=3,
            )
    return sorted(counts)
