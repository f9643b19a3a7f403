"""What every detection dataset of the course shares: targets, image loading, checks, the COCOeval index.

:class:`DetectionDataset` holds the parsed annotations (one ``Tensor[N, 4]`` of boxes and one of labels
per image) and does, for every reader, what does not depend on the file format:

* ``dataset[i]`` loads the image, checks its size against the annotations and applies the transforms;
* :meth:`~DetectionDataset.check_images` reads every image's header when the dataset is opened, so a
  missing, corrupt, truncated, wrongly sized or oversized image is reported before training starts;
* :meth:`~DetectionDataset.coco_api` builds the ``pycocotools`` index that COCOeval scores against
  from :meth:`~DetectionDataset.coco_dict`, the same validated, clipped boxes the targets hold.

A reader (:class:`~retina_edu.data.CocoDetection`, :class:`~retina_edu.data.VOCDetection`) parses its
format, fills ``classes``, ``_boxes``, ``_labels`` and the category mappings, and implements the few
methods marked "for subclasses" (detectron2 and torchvision split their datasets the same way).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .images import image_header, load_image
from .transforms import Target

Transforms = Callable[[Tensor, Target], tuple[Tensor, Target]]

CLIPPED_SHARE_WARNING = 0.2
"""Warn when more than this share of a file's boxes overran their image (by more than a pixel) and
were clipped: COCO boxes are ``[x, y, w, h]``, and boxes written as ``[x1, y1, x2, y2]`` overrun."""
CLIPPED_COUNT_WARNING = 3
"""... and at least this many: one box over the edge of a three-box file is no pattern."""


def check_relative_file_name(name: str, where: str) -> None:
    """Refuse an annotation's file name that would leave the dataset's image folder.

    The check is on the name itself (absolute, a drive, or a ``..`` part), not on resolved paths, so
    that image folders that are symbolic links keep working.

    Raises:
        ValueError: naming ``where`` and the file name.
    """
    pure = PurePath(name)
    if not name or pure.is_absolute() or pure.drive or pure.root or ".." in pure.parts:
        raise ValueError(
            f"{where}: file name {name!r} leaves the image folder; file names must be relative to it, without '..'"
        )


def clipped_share_warning(num_clipped: int, num_boxes: int, where: str) -> str | None:
    """The warning to give when a large share of boxes had to be clipped (``None`` when not)."""
    if num_clipped < CLIPPED_COUNT_WARNING or num_clipped <= CLIPPED_SHARE_WARNING * num_boxes:
        return None
    return (
        f"{where}: {num_clipped} of {num_boxes} boxes ({num_clipped / num_boxes:.0%}) overran their image "
        f"and were clipped; are they written as [x1, y1, x2, y2]? COCO boxes are [x, y, width, height]"
    )


class DetectionDataset(Dataset):
    """Base class of the readers: ``(image, target)`` pairs in torchvision's detection convention.

    ``dataset[i]`` is ``(image Tensor[3, H, W] float32 in [0, 1], {"boxes": Tensor[N, 4] (x1, y1, x2, y2)
    float32 pixels, "labels": Tensor[N] int64 in 0..K-1, "image_id": ...})``, transformed if
    ``transforms`` is set.

    Attributes:
        classes: class names by label.
        transforms: optional callable ``(image, target) -> (image, target)``.
        label_to_category_id: label -> the category id of the annotations.
        category_id_to_label: the inverse mapping.
    """

    classes: list[str]
    label_to_category_id: dict[int, Any]
    category_id_to_label: dict[Any, int]
    transforms: Transforms | None
    _boxes: list[np.ndarray]  # per image, float32 [N, 4] xyxy, clipped, without crowd/difficult objects
    _labels: list[np.ndarray]  # per image, int64 [N]
    _coco: Any = None

    # -- for subclasses --------------------------------------------------------------------------------

    def image_path(self, index: int) -> Path:
        """The image file of ``dataset[index]``."""
        raise NotImplementedError

    def _image_size(self, index: int) -> tuple[int | float, int | float]:
        """``(width, height)`` as the annotations declare it."""
        raise NotImplementedError

    def _image_id(self, index: int) -> Any:
        """``target["image_id"]`` of ``dataset[index]``."""
        raise NotImplementedError

    def _source(self, index: int) -> str:
        """Where ``dataset[index]`` is annotated, for messages (a file, and the image's id in it)."""
        raise NotImplementedError

    def coco_dict(self) -> dict[str, Any]:
        """The ground truth in COCO format, as COCOeval should see it (see :meth:`coco_api`)."""
        raise NotImplementedError

    def coco_image_id(self, image_id: Any) -> int:
        """The id in :meth:`coco_api` of the image whose ``target["image_id"]`` is ``image_id``."""
        raise NotImplementedError

    def coco_category_id(self, label: int) -> int:
        """The category id in :meth:`coco_api` of ``label``."""
        return int(self.label_to_category_id[label])

    # -- shared ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._boxes)

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.classes)

    def get_target(self, index: int) -> Target:
        """The target of ``dataset[index]`` without reading the image or applying transforms."""
        return {
            "boxes": torch.from_numpy(self._boxes[index].copy()),
            "labels": torch.from_numpy(self._labels[index].copy()),
            "image_id": self._image_id(index),
        }

    def _size_error(self, index: int, width: int, height: int) -> ValueError | None:
        declared = self._image_size(index)
        if (width, height) == tuple(declared):
            return None
        return ValueError(
            f"{self.image_path(index)} is {width}x{height} pixels but {self._source(index)} says "
            f"{declared[0]:g}x{declared[1]:g}; fix the annotation or the image"
        )

    def check_images(self, indices: Iterable[int] | None = None) -> None:
        """Read the header of every image (not its pixels): readable, not truncated, of a supported
        mode, not oversized, and of the size the annotations declare.

        Raises:
            ValueError: naming the image file and its annotation.
        """
        for index in range(len(self)) if indices is None else indices:
            try:
                header = image_header(self.image_path(index))
            except ValueError as e:
                raise ValueError(f"{self._source(index)}: {e}") from None
            error = self._size_error(index, header.width, header.height)
            if error is not None:
                raise error

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        """Return ``(image Tensor[3, H, W] float32 in [0, 1], target)``, transformed if transforms were given.

        Raises:
            ValueError: the image is unreadable or its size differs from the annotations.
        """
        try:
            image = load_image(self.image_path(index))
        except ValueError as e:
            raise ValueError(f"{self._source(index)}: {e}") from e
        error = self._size_error(index, image.shape[2], image.shape[1])
        if error is not None:
            raise error
        target = self.get_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_api(self):
        """A ``pycocotools.coco.COCO`` built from :meth:`coco_dict` (for COCOeval), created once, silently.

        It holds the boxes the targets hold (validated and clipped), so the dataset's own targets
        scored as detections give AP 1.0, whatever the file left out (``area``, ``iscrowd``) or
        wrote out of bounds.
        """
        if self._coco is None:
            from pycocotools.coco import COCO

            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO()
                coco.dataset = self.coco_dict()
                coco.createIndex()
            self._coco = coco
        return self._coco

    def coco_image_ids(self, image_ids: Sequence[Any]) -> list[int]:
        """:meth:`coco_image_id` of each id."""
        return [self.coco_image_id(i) for i in image_ids]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_coco"] = None  # DataLoader workers do not need (or pickle) the pycocotools index
        return state
