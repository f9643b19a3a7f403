"""The shapes dataset: a synthetic detection dataset that trains on a CPU in minutes.

Each image holds 0 to 8 shapes of four classes (ellipse, rectangle, triangle, ring) on a textured
background with clutter. It is small enough to learn quickly, yet it exercises what RetinaNet is
about (paper, Sections 3-4):

* many scales: the larger side of a box is log-uniform from 8 px to 0.8 x the image size, so every
  FPN level P3-P7 has objects to find;
* three aspect ratios: width / height is log-uniform in [0.5, 2], so all anchor aspects matter;
* dense scenes with partial overlaps (IoU <= 0.3 between boxes) and lots of background, which is
  the class imbalance the focal loss is for (Section 3);
* colour is random and independent of the class, so the class must be learned from the shape.

The files are written in COCO format, so :class:`retina_edu.data.CocoDetection` reads them like any
other COCO folder::

    root/
      images/000000.png ...          RGB PNGs, image id = index = file number
      annotations.json               COCO: images, annotations (bbox [x, y, w, h]), categories

Boxes are computed from the geometry that is drawn (not from the pixels afterwards) and are tight:
every shape covers its box up to anti-aliasing, so the drawn pixels fit the box within one pixel.

Generation is deterministic: image ``i`` of seed ``s`` uses ``np.random.default_rng([s, i])``, so the
output does not depend on the number of worker processes, and the same seed gives byte-identical
files. A dataset is written into a temporary sibling folder and renamed into place at the end, so a
folder that holds ``annotations.json`` is always complete.
"""

from __future__ import annotations

import colorsys
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..device import available_cpus
from ..files import replace_folder_atomic

SHAPES_CLASSES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "ring")
"""Class names by label (category id = label + 1 in the COCO file)."""

SHAPES_VERSION = "1"
"""Bumped whenever the generator changes what a seed produces."""

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"

SUPERSAMPLE = 4
"""Each pixel of a shape is the average of SUPERSAMPLE x SUPERSAMPLE samples (anti-aliasing)."""

ASPECT_RANGE = (0.5, 2.0)
"""Width / height of a shape is log-uniform in this range: the paper's anchor aspects {1:2, 1:1, 2:1}."""

MIN_CONTRAST = 0.3
"""Smallest RGB distance (colours in [0, 1]) between a shape and what lies under it, when achievable."""

_PLACEMENT_TRIES = 10
_COLOUR_TRIES = 16


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of the generator (everything but the seed and the image index).

    Attributes:
        image_size: images are square, ``image_size x image_size`` pixels.
        min_size: smallest larger-side of a box, in pixels.
        max_size: largest larger-side of a box, in pixels; ``None`` means ``0.8 * image_size``.
        max_objects: a non-empty image holds ``1..max_objects`` shapes (uniform count).
        empty_fraction: probability that an image holds no shape at all.
        max_iou: a new box is rejected when its IoU with a box already placed exceeds this.
    """

    image_size: int = 256
    min_size: float = 8.0
    max_size: float | None = None
    max_objects: int = 8
    empty_fraction: float = 0.05
    max_iou: float = 0.3

    def resolved(self) -> ShapesConfig:
        """Return a copy with ``max_size`` filled in and every field validated.

        Raises:
            ValueError: naming the parameter that is out of range.
        """
        max_size = 0.8 * self.image_size if self.max_size is None else float(self.max_size)
        cfg = replace(self, max_size=round(max_size, 2), min_size=float(self.min_size))
        if not isinstance(cfg.image_size, int) or cfg.image_size < 16:
            raise ValueError(f"make_shapes: image_size must be an int >= 16, got {cfg.image_size!r}")
        if not cfg.min_size >= 2:
            raise ValueError(f"make_shapes: min_size must be >= 2 pixels, got {cfg.min_size!r}")
        if not cfg.min_size <= cfg.max_size <= cfg.image_size:
            raise ValueError(
                f"make_shapes: need min_size <= max_size <= image_size, got min_size={cfg.min_size}, "
                f"max_size={cfg.max_size}, image_size={cfg.image_size}"
            )
        if not isinstance(cfg.max_objects, int) or cfg.max_objects < 0:
            raise ValueError(f"make_shapes: max_objects must be an int >= 0, got {cfg.max_objects!r}")
        if not 0.0 <= cfg.empty_fraction <= 1.0:
            raise ValueError(f"make_shapes: empty_fraction must be in [0, 1], got {cfg.empty_fraction!r}")
        if not 0.0 < cfg.max_iou <= 1.0:
            raise ValueError(f"make_shapes: max_iou must be in (0, 1], got {cfg.max_iou!r}")
        return cfg


@dataclass(frozen=True)
class ShapeObject:
    """One drawn shape.

    Attributes:
        label: class index into :data:`SHAPES_CLASSES`.
        box: ``(x1, y1, x2, y2)`` in pixels (continuous coordinates: pixel ``i`` spans ``[i, i+1)``),
            with x1, y1, width and height rounded to 2 decimals. The shape touches all four sides.
        color: RGB in [0, 1].
        pointing_up: triangles only: apex at the top (True) or at the bottom.
        hole: rings only: radius of the hole as a fraction of the outer radius.
    """

    label: int
    box: tuple[float, float, float, float]
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pointing_up: bool = True
    hole: float = 0.5

    @property
    def xywh(self) -> list[float]:
        """The COCO bbox ``[x, y, w, h]``, rounded to 2 decimals."""
        x1, y1, x2, y2 = self.box
        return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def shape_coverage(obj: ShapeObject, supersample: int = SUPERSAMPLE) -> tuple[int, int, np.ndarray]:
    """How much of each pixel around ``obj.box`` the shape covers.

    The shape is evaluated at ``supersample x supersample`` sample points per pixel and averaged,
    which anti-aliases the edges. A pixel with coverage > 0 intersects the shape, so the covered
    pixels fit ``obj.box`` within one pixel.

    Args:
        obj: the shape.
        supersample: samples per pixel along each axis.

    Returns:
        ``(x0, y0, alpha)``: ``alpha`` is a float32 array ``[h, w]`` in [0, 1] for the pixels
        ``x0..x0+w-1``, ``y0..y0+h-1`` (the integer pixels that the box touches).
    """
    x1, y1, x2, y2 = obj.box
    px0, py0 = math.floor(x1), math.floor(y1)
    pw, ph = math.ceil(x2) - px0, math.ceil(y2) - py0
    s = supersample
    # Sample points at the centres of the sub-pixels, in image coordinates.
    xs = px0 + (np.arange(pw * s, dtype=np.float32) + 0.5) / s
    ys = py0 + (np.arange(ph * s, dtype=np.float32) + 0.5) / s
    # Normalised coordinates: the box is [-1, 1] x [-1, 1].
    u = (xs - (x1 + x2) / 2) / ((x2 - x1) / 2)
    v = (ys - (y1 + y2) / 2) / ((y2 - y1) / 2)
    name = SHAPES_CLASSES[obj.label]
    if name == "rectangle":
        inside = (np.abs(v) <= 1)[:, None] & (np.abs(u) <= 1)[None, :]
    elif name in ("ellipse", "ring"):
        r2 = v[:, None] ** 2 + u[None, :] ** 2
        inside = r2 <= 1
        if name == "ring":
            inside &= r2 >= obj.hole**2
    elif name == "triangle":
        # Isosceles: apex at v = -1 (top) when pointing up, base along v = +1.
        w = v if obj.pointing_up else -v
        inside = (np.abs(u)[None, :] <= (w[:, None] + 1) / 2) & (np.abs(w) <= 1)[:, None]
    else:  # pragma: no cover - guarded by SHAPES_CLASSES
        raise ValueError(f"shape_coverage: unknown shape label {obj.label}")
    alpha = inside.reshape(ph, s, pw, s).mean(axis=(1, 3), dtype=np.float32)
    return px0, py0, alpha


def draw_shape(canvas: np.ndarray, obj: ShapeObject) -> None:
    """Alpha-blend ``obj`` in its colour onto ``canvas`` in place.

    Args:
        canvas: float32 array ``[H, W, 3]`` with RGB in [0, 1].
        obj: the shape; its box must lie inside the canvas.
    """
    x0, y0, alpha = shape_coverage(obj)
    h, w = alpha.shape
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    a = alpha[: region.shape[0], : region.shape[1], None]
    region *= 1 - a
    region += a * np.asarray(obj.color, dtype=np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth gradient between two muted colours plus low-frequency noise: float32 [H, W, 3]."""
    c0 = _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.2, 0.75))
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.2, 0.75))
    theta = rng.uniform(0, 2 * math.pi)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    t = math.cos(theta) * coords[None, :] + math.sin(theta) * coords[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = c0 + (c1 - c0) * t[..., None]
    # Low-frequency noise: two octaves of random grids upsampled with bicubic interpolation.
    for cells, amplitude in ((4, 0.07), (9, 0.035)):
        grid = rng.normal(0.0, amplitude, size=(3, cells, cells)).astype(np.float32)
        for c in range(3):
            smooth = Image.fromarray(grid[c]).resize((size, size), Image.BICUBIC)
            image[..., c] += np.asarray(smooth)
    return image


def _add_clutter(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Thin random polylines and faint blurred blobs: distractors that are not objects."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        points = [tuple(float(p) for p in rng.uniform(0, size, 2)) for _ in range(int(rng.integers(2, 4)))]
        mask = Image.new("L", (size, size), 0)
        width = int(rng.integers(1, 3)) * max(1, size // 256)
        ImageDraw.Draw(mask).line(points, fill=255, width=width)
        colour = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.2, 1.0))
        _blend(canvas, mask, colour, rng.uniform(0.25, 0.6))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = (float(c) for c in rng.uniform(0, size, 2))
        rx, ry = (float(r) * size for r in rng.uniform(0.05, 0.3, 2))
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(radius=float(0.4 * min(rx, ry))))
        colour = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.2, 1.0))
        _blend(canvas, mask, colour, rng.uniform(0.1, 0.25))


def _blend(canvas: np.ndarray, mask: Image.Image, colour: np.ndarray, opacity: float) -> None:
    a = np.asarray(mask, dtype=np.float32)[..., None] * np.float32(opacity / 255.0)
    canvas *= 1 - a
    canvas += a * colour


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _sample_objects(rng: np.random.Generator, cfg: ShapesConfig) -> list[ShapeObject]:
    """Sample the geometry of one image's shapes, largest first (colours are chosen when drawing)."""
    if cfg.max_objects == 0 or rng.random() < cfg.empty_fraction:
        return []
    count = int(rng.integers(1, cfg.max_objects + 1))
    sizes = np.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size), count))
    sizes = np.sort(sizes)[::-1]  # larger objects first, so small ones are drawn on top
    size = cfg.image_size
    objects: list[ShapeObject] = []
    for larger_side in sizes:
        label = int(rng.integers(len(SHAPES_CLASSES)))
        aspect = math.exp(rng.uniform(math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])))
        pointing_up = bool(rng.random() < 0.5)
        hole = round(float(rng.uniform(0.4, 0.65)), 3)
        w, h = (larger_side, larger_side / aspect) if aspect >= 1 else (larger_side * aspect, larger_side)
        w, h = round(float(w), 2), round(float(h), 2)
        for _ in range(_PLACEMENT_TRIES):
            x = round(float(rng.uniform(0, size - w)), 2)
            y = round(float(rng.uniform(0, size - h)), 2)
            box = (x, y, x + w, y + h)
            if all(_iou(box, other.box) <= cfg.max_iou for other in objects):
                objects.append(ShapeObject(label, box, pointing_up=pointing_up, hole=hole))
                break
    return objects


def _pick_colour(rng: np.random.Generator, canvas: np.ndarray, obj: ShapeObject, drawn: list[ShapeObject]) -> tuple:
    """A saturated random colour that stands out from what lies under the shape."""
    x1, y1, x2, y2 = obj.box
    under = canvas[math.floor(y1) : math.ceil(y2), math.floor(x1) : math.ceil(x2)].reshape(-1, 3).mean(axis=0)
    avoid = [under] + [np.asarray(o.color, dtype=np.float32) for o in drawn if _overlaps(o.box, obj.box)]
    best, best_distance = None, -1.0
    for _ in range(_COLOUR_TRIES):
        colour = _hsv(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.5, 1.0))
        distance = min(float(np.linalg.norm(colour - c)) for c in avoid)
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= MIN_CONTRAST:
            break
    return tuple(round(float(c), 4) for c in best)


def generate_image(
    index: int, seed: int = 0, config: ShapesConfig | None = None
) -> tuple[np.ndarray, list[ShapeObject]]:
    """Render image ``index`` of the shapes dataset for ``seed``.

    Args:
        index: image index (also its COCO image id).
        seed: dataset seed.
        config: generator parameters; ``None`` means the defaults.

    Returns:
        ``(image, objects)``: ``image`` is a uint8 array ``[S, S, 3]`` (RGB), ``objects`` the drawn
        shapes in drawing order (largest first) with their tight boxes and colours.
    """
    cfg = (config or ShapesConfig()).resolved()
    rng = np.random.default_rng([seed, index])
    canvas = _background(rng, cfg.image_size)
    _add_clutter(rng, canvas)
    objects = _sample_objects(rng, cfg)
    drawn: list[ShapeObject] = []
    for obj in objects:
        obj = replace(obj, color=_pick_colour(rng, canvas, obj, drawn))
        draw_shape(canvas, obj)
        drawn.append(obj)
    # A little pixel noise (sensor-like). It is what makes the PNGs big: ~100 KB instead of ~45 KB.
    canvas += rng.normal(0.0, rng.uniform(0.004, 0.012), size=canvas.shape).astype(np.float32)
    image = (np.clip(canvas, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return image, drawn


# --------------------------------------------------------------------------------------------------
# Writing a dataset
# --------------------------------------------------------------------------------------------------


def _render_task(task: tuple[int, int, ShapesConfig, str]) -> tuple[int, list[tuple[int, list[float]]]]:
    """Worker: render one image, save it as PNG, return its (label, xywh) annotations."""
    index, seed, cfg, images_dir = task
    image, objects = generate_image(index, seed, cfg)
    Image.fromarray(image).save(os.path.join(images_dir, f"{index:06d}.png"), compress_level=1)
    return index, [(obj.label, obj.xywh) for obj in objects]


def _info(cfg: ShapesConfig, seed: int, num_images: int) -> dict[str, Any]:
    params = asdict(cfg)
    return {
        "description": "retina-edu synthetic shapes",
        "generator": "retina_edu.data.make_shapes",
        "version": SHAPES_VERSION,
        "seed": seed,
        "num_images": num_images,
        **params,
    }


def _coco_json(info: dict[str, Any], results: list[list[tuple[int, list[float]]]], image_size: int) -> str:
    """The annotations file: one entry per line so that ``head annotations.json`` is readable."""
    images, annotations = [], []
    for index, objects in enumerate(results):
        images.append({"id": index, "file_name": f"{index:06d}.png", "width": image_size, "height": image_size})
        for label, (x, y, w, h) in objects:
            annotations.append(
                {
                    # Annotation ids start at 1: pycocotools' COCOeval stores matched gt ids and
                    # reads 0 as "unmatched".
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": label + 1,
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES_CLASSES)]

    def block(name: str, items: list[dict[str, Any]]) -> str:
        if not items:
            return f'"{name}": []'
        return f'"{name}": [\n' + ",\n".join(json.dumps(item) for item in items) + "\n]"

    parts = [
        f'"info": {json.dumps(info)}',
        block("images", images),
        block("annotations", annotations),
        block("categories", categories),
    ]
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_method() -> str:
    # fork is fast and needs no re-import; macOS and Windows spawn (fork is unsafe or missing there).
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _render_all(tasks: list[tuple], workers: int, progress: bool, desc: str) -> list:
    from tqdm.auto import tqdm

    results: list = [None] * len(tasks)
    with tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress, leave=True) as bar:
        if workers <= 1 or len(tasks) < 32:
            for task in tasks:
                index, objects = _render_task(task)
                results[index] = objects
                bar.update()
        else:
            ctx = multiprocessing.get_context(_start_method())
            # Workers ignore Ctrl-C: the parent alone handles it, and leaving the block terminates them.
            with ctx.Pool(workers, initializer=_ignore_sigint) as pool:
                for index, objects in pool.imap_unordered(_render_task, tasks, chunksize=8):
                    results[index] = objects
                    bar.update()
    return results


def make_shapes(
    root: str | os.PathLike,
    num_images: int,
    image_size: int = 256,
    seed: int = 0,
    *,
    min_size: float = 8.0,
    max_size: float | None = None,
    max_objects: int = 8,
    empty_fraction: float = 0.05,
    max_iou: float = 0.3,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate a shapes dataset in COCO format under ``root``.

    Writes ``root/images/000000.png ...`` and ``root/annotations.json`` (see the module docstring).
    The dataset is built in a temporary sibling folder and renamed into place when complete; on any
    error (or Ctrl-C) the temporary folder is removed and ``root`` is left as it was.

    Args:
        root: output folder; its parent is created if needed.
        num_images: number of images, >= 1.
        image_size: images are ``image_size x image_size`` RGB.
        seed: dataset seed; image ``i`` uses ``np.random.default_rng([seed, i])``.
        min_size: smallest larger-side of a box in pixels.
        max_size: largest larger-side of a box in pixels (``None``: ``0.8 * image_size``).
        max_objects: a non-empty image holds ``1..max_objects`` shapes before overlap rejection.
        empty_fraction: probability of an image with no shape.
        max_iou: largest IoU allowed between two boxes of an image.
        workers: processes to render with (``None``: the CPUs available; 0 or 1: this process).
        overwrite: replace a dataset already in ``root`` (atomically) instead of raising.
        progress: show a tqdm progress bar.

    Returns:
        ``root`` as a Path.

    Raises:
        FileExistsError: ``root`` already holds a dataset (or other files) and ``overwrite`` is False.
        ValueError: a parameter is out of range.
    """
    cfg = ShapesConfig(image_size, min_size, max_size, max_objects, empty_fraction, max_iou).resolved()
    _check_counts(num_images, seed, workers)
    root = Path(root)
    if not overwrite:
        _check_free(root)
    workers = available_cpus() if workers is None else workers

    def build(folder: Path) -> None:
        (folder / IMAGES_DIR).mkdir()
        tasks = [(i, seed, cfg, str(folder / IMAGES_DIR)) for i in range(num_images)]
        results = _render_all(tasks, workers, progress, desc=f"shapes {root.name}")
        text = _coco_json(_info(cfg, seed, num_images), results, cfg.image_size)
        (folder / ANNOTATIONS_FILE).write_text(text, encoding="utf-8")

    replace_folder_atomic(root, build)
    return root


def _check_counts(num_images: int, seed: int, workers: int | None) -> None:
    """``make_shapes``'s whole-number arguments, each in its range."""
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"make_shapes: num_images must be an int >= 1, got {num_images!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"make_shapes: seed must be an int >= 0, got {seed!r}")
    if workers is not None and workers < 0:
        raise ValueError(f"make_shapes: workers must be >= 0 or None, got {workers!r}")


def _check_free(root: Path) -> None:
    """A ``FileExistsError`` unless ``root`` is missing or an empty folder (a dataset is never replaced
    without ``overwrite``)."""
    if not root.exists():
        return
    if (root / ANNOTATIONS_FILE).exists():
        raise FileExistsError(
            f"{root} already holds a dataset ({ANNOTATIONS_FILE} is there); pass overwrite=True "
            f"(CLI: --overwrite) to replace it, or delete the folder first"
        )
    if not root.is_dir() or any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists and is not an empty folder; pass overwrite=True (CLI: --overwrite) to "
            f"replace it, or choose another folder"
        )


def _existing_info(path: Path) -> dict[str, Any] | None:
    try:
        with open(path / ANNOTATIONS_FILE, encoding="utf-8") as f:
            info = json.load(f).get("info")
    except (OSError, ValueError, AttributeError):
        return None
    return info if isinstance(info, dict) else None


def make_shapes_splits(
    root: str | os.PathLike = "data/shapes",
    train: int = 2000,
    val: int = 500,
    image_size: int = 256,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Path]:
    """Make ``root/train`` (seed ``seed``) and ``root/val`` (seed ``seed + 1``) shapes datasets.

    A split that already exists, complete and made with the same parameters, is reused as it is
    (so re-running ``make data`` is instant). A split made with other parameters is never replaced
    silently: that raises ``FileExistsError`` unless ``overwrite`` is True. A split of 0 images is
    skipped.

    Args:
        root: parent folder of the splits.
        train: number of training images.
        val: number of validation images.
        image_size: images are ``image_size x image_size``.
        seed: seed of the train split; val uses ``seed + 1``.
        overwrite: regenerate splits that exist.
        progress: show progress bars and say which splits are reused.
        workers: processes to render with (``None``: ``os.cpu_count()``).

    Returns:
        ``{"train": root/train, "val": root/val}`` (splits with 0 images left out).
    """
    root = Path(root)
    paths: dict[str, Path] = {}
    for split, num_images, split_seed in (("train", train, seed), ("val", val, seed + 1)):
        if num_images == 0:
            continue
        path = root / split
        if (path / ANNOTATIONS_FILE).exists() and not overwrite:
            wanted = _info(ShapesConfig(image_size).resolved(), split_seed, num_images)
            found = _existing_info(path)
            if found != wanted:
                keys = ("num_images", "image_size", "seed", "version")
                have = ", ".join(f"{k}={found.get(k)!r}" for k in keys) if found else "another generator"
                want = ", ".join(f"{k}={wanted[k]!r}" for k in keys)
                raise FileExistsError(
                    f"{path} already holds a dataset made with {have}, but {want} was asked for; pass "
                    f"overwrite=True (CLI: --overwrite) to regenerate it, or delete the folder"
                )
            if progress:
                print(f"{path}: reusing the existing {num_images} images (seed {split_seed})")
        else:
            start = time.perf_counter()
            make_shapes(
                path, num_images, image_size, split_seed, workers=workers, overwrite=overwrite, progress=progress
            )
            if progress:
                print(f"{path}: wrote {num_images} images in {time.perf_counter() - start:.1f} s")
        paths[split] = path
    return paths
