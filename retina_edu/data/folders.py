"""Open a dataset folder whatever its format (what ``python -m retina_edu train --data DIR`` does)."""

from __future__ import annotations

import os
from pathlib import Path

from .coco import CocoDetection
from .voc import VOCDetection

__all__ = ["open_dataset"]


def open_dataset(root: str | os.PathLike, transforms=None) -> CocoDetection | VOCDetection:
    """A ``CocoDetection`` or ``VOCDetection`` for ``root``, recognised by its layout.

    * COCO: ``root/annotations.json`` with images in ``root/images/`` (what the shapes generator
      writes) or beside the JSON file.
    * Pascal VOC: ``root/Annotations/*.xml`` and ``root/JPEGImages/``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is neither layout (the message lists what was looked for).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    ann = root / "annotations.json"
    if ann.is_file():
        image_dir = root / "images" if (root / "images").is_dir() else root
        return CocoDetection(image_dir, ann, transforms=transforms)
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return VOCDetection(root / "JPEGImages", root / "Annotations", transforms=transforms)
    raise ValueError(
        f"{root}: unknown dataset format. Expected COCO (annotations.json, images in images/) "
        f"or Pascal VOC (Annotations/*.xml and JPEGImages/)."
    )
