"""Open a dataset folder whatever its format (what ``python -m retina_edu train --data DIR`` does)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .coco import CocoDetection
from .voc import VOCDetection

__all__ = ["open_dataset"]


def open_dataset(
    root: str | os.PathLike, transforms=None, classes: Sequence[str] | None = None
) -> CocoDetection | VOCDetection:
    """A ``CocoDetection`` or ``VOCDetection`` for ``root``, recognised by its layout.

    * COCO: ``root/annotations.json`` with images in ``root/images/`` (what the shapes generator
      writes) or beside the JSON file.
    * Pascal VOC: ``root/Annotations/*.xml`` and ``root/JPEGImages/``.

    Args:
        root: the dataset folder.
        transforms: optional callable ``(image, target) -> (image, target)``.
        classes: Pascal VOC only: the class names by label, so that a misspelt name in an XML file
            is an error instead of a new class (COCO files list their categories themselves).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is neither layout (the message lists what was looked for), or
            ``classes`` was given for a COCO folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    ann = root / "annotations.json"
    if ann.is_file():
        if classes is not None:
            raise ValueError(f"{ann}: a COCO file lists its own categories; classes= is for Pascal VOC folders")
        image_dir = root / "images" if (root / "images").is_dir() else root
        return CocoDetection(image_dir, ann, transforms=transforms)
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return VOCDetection(root / "JPEGImages", root / "Annotations", classes=classes, transforms=transforms)
    raise ValueError(
        f"{root}: unknown dataset format. Expected COCO (annotations.json, images in images/) "
        f"or Pascal VOC (Annotations/*.xml and JPEGImages/)."
    )
