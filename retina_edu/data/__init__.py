"""Data for the course: the shapes generator, COCO and VOC readers, transforms, downloads.

Every dataset returns ``(image, target)`` with ``image`` a float tensor ``[3, H, W]`` in [0, 1] and
``target = {"boxes": Tensor[N, 4] (x1, y1, x2, y2) float32 pixels, "labels": Tensor[N] int64 in
0..K-1, "image_id": int}`` (torchvision's detection convention)::

    from retina_edu.data import make_shapes_splits, CocoDetection
    splits = make_shapes_splits("data/shapes")            # instant when the data is already there
    train = CocoDetection.from_folder(splits["train"])
    image, target = train[0]
"""

from .base import DetectionDataset
from .coco import CocoDetection
from .download import (
    DATASETS,
    RemoteDataset,
    download_dataset,
    download_file,
    extract_archive,
    file_sha256,
    pennfudan_to_coco,
)
from .folders import open_dataset
from .images import MAX_IMAGE_PIXELS, image_header, load_image
from .shapes import (
    SHAPES_CLASSES,
    SHAPES_VERSION,
    ShapeObject,
    ShapesConfig,
    draw_shape,
    generate_image,
    make_shapes,
    make_shapes_splits,
    shape_coverage,
)
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    collate_fn,
    denormalize,
)
from .voc import VOCDetection

__all__ = [
    "CocoDetection",
    "Compose",
    "DATASETS",
    "DetectionDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_IMAGE_PIXELS",
    "Normalize",
    "RandomHorizontalFlip",
    "RemoteDataset",
    "Resize",
    "SHAPES_CLASSES",
    "SHAPES_VERSION",
    "ShapeObject",
    "ShapesConfig",
    "VOCDetection",
    "collate_fn",
    "denormalize",
    "download_dataset",
    "download_file",
    "draw_shape",
    "extract_archive",
    "file_sha256",
    "generate_image",
    "image_header",
    "load_image",
    "make_shapes",
    "make_shapes_splits",
    "open_dataset",
    "pennfudan_to_coco",
    "shape_coverage",
]
