"""Anchors: the fixed reference boxes RetinaNet classifies and regresses from (notebook 01).

Paper, section 4 ("Anchors"): on each pyramid level P3-P7 (strides 8 to 128) the anchors have
areas 32² to 512², and at every location there are 3 scales {2^0, 2^(1/3), 2^(2/3)} times
3 aspect ratios {1:2, 1:1, 2:1}: A = 9 anchors per location, covering 32 to 813 pixels.

Ordering (the same as torchvision, so that weights and detections can be shared): levels in
order P3..P7; within a level, locations row by row (y, then x); within a location, aspect
ratio major, scale minor (anchor index = ratio_index * num_scales + scale_index).

Where torchvision differs from the paper, it is an argument here:

* sizes: torchvision truncates the scaled sizes to integers (32, 40, 50 instead of 32, 40.3,
  50.8) and rounds the corners of the centred anchors. Pass
  ``sizes=torchvision_anchor_sizes(), scales=None, round_base=True`` to get its anchors.
* centre: torchvision and detectron2 (by default) put anchor centres at ``i * stride``, the
  top-left corner of each cell (``offset=0``, our default, so torchvision's weights give its
  detections). The paper's Detectron centres them in the cell: its ``generate_anchors`` is
  "centered on stride / 2" and first rounds each aspect ratio's shape to whole pixels at the
  stride before scaling it (on P3, size 32, h/w = 0.5 gives 44 x 24 rather than 45.3 x 22.6).
  ``offset=0.5`` gives Detectron's (and detectron2's ``offset=0.5``) centring; the rounding of
  the shapes is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "FIT_BASE_SIZES",
    "PAPER_ANCHOR_SIZES",
    "PAPER_ASPECT_RATIOS",
    "PAPER_SCALES",
    "PAPER_STRIDES",
    "PYRAMID_LEVEL_NAMES",
    "AnchorCoverage",
    "AnchorFit",
    "AnchorGenerator",
    "anchor_coverage",
    "anchors_per_level",
    "cell_anchors",
    "dataset_boxes",
    "feature_map_sizes",
    "fit_anchor_sizes",
    "generate_anchors",
    "level_anchor_sizes",
    "torchvision_anchor_sizes",
]

PAPER_STRIDES = (8, 16, 32, 64, 128)  # P3 .. P7
PAPER_ANCHOR_SIZES = (32, 64, 128, 256, 512)  # base size (sqrt of area) per level
PAPER_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width
# The paper's names of the pyramid levels, by index into the anchor settings (strides 8..128).
PYRAMID_LEVEL_NAMES = ("P3", "P4", "P5", "P6", "P7")

SizeSpec = Sequence[float] | Sequence[Sequence[float]]


def torchvision_anchor_sizes(sizes: Sequence[int] = PAPER_ANCHOR_SIZES) -> tuple[tuple[int, ...], ...]:
    """torchvision's per-level anchor sizes: the paper's scales, truncated to integers.

    >>> torchvision_anchor_sizes()[0]
    (32, 40, 50)
    """
    return tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in sizes)


def level_anchor_sizes(sizes: SizeSpec, scales: Sequence[float] | None) -> list[tuple[float, ...]]:
    """The anchor sizes of each level: ``size * scale`` for every scale.

    Args:
        sizes: one base size per level (the paper's 32..512), or one tuple of explicit sizes per
            level (then ``scales`` must be ``None``).
        scales: multipliers of the base size (the paper's 2^0, 2^(1/3), 2^(2/3)).
    """
    explicit = [isinstance(s, (tuple, list)) for s in sizes]
    if all(explicit):
        if scales is not None:
            raise ValueError("sizes already lists every anchor size per level: pass scales=None")
        return [tuple(float(x) for x in s) for s in sizes]
    if any(explicit):
        raise ValueError("sizes must be all numbers (one base size per level) or all tuples (sizes per level)")
    if scales is None or len(scales) == 0:
        raise ValueError("scales must name at least one scale when sizes gives one base size per level")
    return [tuple(float(s) * float(k) for k in scales) for s in sizes]


def cell_anchors(
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
    round_base: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The anchors of one location, centred on (0, 0).

    An anchor of size ``s`` and aspect ratio ``r = h / w`` has area ``s²``: ``w = s / sqrt(r)``,
    ``h = s * sqrt(r)``.

    Args:
        sizes: the anchor sizes at this level (``base * scale`` for each scale).
        aspect_ratios: heights over widths.
        round_base: round the corners to integers (torchvision does).

    Returns:
        ``Tensor[len(aspect_ratios) * len(sizes), 4]`` xyxy, ratio major, size minor.
    """
    # Computed in float64 so that the paper's sizes are exact, then cast.
    sizes_t = torch.as_tensor(sizes, dtype=torch.float64)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * sizes_t[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes_t[None, :]).reshape(-1)
    base = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    if round_base:
        base = base.round()
    return base.to(dtype=dtype, device=device)


def feature_map_sizes(image_size: tuple[int, int], strides: Sequence[int] = PAPER_STRIDES) -> list[tuple[int, int]]:
    """Size of each pyramid level for an input of ``image_size = (H, W)``.

    Every stride-2 convolution in a ResNet (and in P6/P7) maps ``n`` to ``ceil(n / 2)``, so the
    level of stride ``s`` is ``ceil(H / s) x ceil(W / s)`` for strides that are powers of 2.
    """
    h, w = image_size
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def _level_grid(base: Tensor, grid: tuple[int, int], stride: tuple[float, float], offset: float) -> Tensor:
    gh, gw = grid
    sy, sx = stride
    device, dtype = base.device, base.dtype
    shifts_x = (torch.arange(gw, device=device, dtype=dtype) + offset) * sx
    shifts_y = (torch.arange(gh, device=device, dtype=dtype) + offset) * sy
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
    return (shifts + base.view(1, -1, 4)).reshape(-1, 4)


def anchors_per_level(
    image_size: tuple[int, int],
    strides: Sequence[int] = PAPER_STRIDES,
    sizes: SizeSpec = PAPER_ANCHOR_SIZES,
    scales: Sequence[float] | None = PAPER_SCALES,
    aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
    offset: float = 0.0,
    round_base: bool = False,
    grid_sizes: Sequence[tuple[int, int]] | None = None,
    strides_from_grid: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Anchors of each pyramid level: a list of ``Tensor[H_l * W_l * A, 4]`` xyxy in pixels.

    Args:
        image_size: ``(H, W)`` of the (padded) network input.
        strides: the stride of each level.
        sizes, scales: see ``level_anchor_sizes``.
        aspect_ratios: heights over widths.
        offset: anchor centres at ``(i + offset) * stride``: 0 as torchvision and detectron2's
            default, 0.5 for the cell centre as the paper's Detectron (see the module docstring).
        round_base: round the centred anchors to integers, as torchvision does.
        grid_sizes: the feature map sizes; by default ``feature_map_sizes(image_size, strides)``.
        strides_from_grid: take each level's stride as ``image_size // grid_size`` per axis, as
            torchvision does (it then differs from the nominal stride when the input is not a
            multiple of 128: an 800-pixel side gives P6 a stride of 800 // 13 = 61).
    """
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"image_size must be (H, W) with positive sides, got {tuple(image_size)}")
    per_level = level_anchor_sizes(sizes, scales)
    if len(per_level) != len(strides):
        raise ValueError(f"{len(per_level)} anchor sizes for {len(strides)} strides: give one per level")
    grids = list(grid_sizes) if grid_sizes is not None else feature_map_sizes(image_size, strides)
    out = []
    for level_sizes, stride, grid in zip(per_level, strides, grids):
        base = cell_anchors(level_sizes, aspect_ratios, round_base, dtype=torch.float64)
        if strides_from_grid:
            step = (float(image_size[0] // grid[0]), float(image_size[1] // grid[1]))
        else:
            step = (float(stride), float(stride))
        out.append(_level_grid(base, tuple(grid), step, offset).to(dtype=dtype, device=device))
    return out


def generate_anchors(
    image_size: tuple[int, int],
    strides: Sequence[int] = PAPER_STRIDES,
    sizes: SizeSpec = PAPER_ANCHOR_SIZES,
    scales: Sequence[float] | None = PAPER_SCALES,
    aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
    offset: float = 0.0,
    **kwargs,
) -> Tensor:
    """All anchors of an image: ``Tensor[sum_l H_l * W_l * A, 4]`` xyxy in pixels.

    The paper's defaults: strides 8..128, sizes 32..512, 3 scales x 3 aspect ratios. Other
    keyword arguments (``round_base``, ``grid_sizes``, ``strides_from_grid``, ``dtype``,
    ``device``) are those of ``anchors_per_level``.

    >>> generate_anchors((512, 512)).shape   # (64² + 32² + 16² + 8² + 4²) * 9
    torch.Size([49104, 4])
    """
    return torch.cat(anchors_per_level(image_size, strides, sizes, scales, aspect_ratios, offset, **kwargs))


class AnchorGenerator(nn.Module):
    """Anchors for an input size, computed once per size and cached.

    ``forward(image_size, grid_sizes=None)`` returns ``Tensor[A_total, 4]``; anchors are the same
    for every image of a padded batch, so they are not repeated per image.
    """

    def __init__(
        self,
        strides: Sequence[int] = PAPER_STRIDES,
        sizes: SizeSpec = PAPER_ANCHOR_SIZES,
        scales: Sequence[float] | None = PAPER_SCALES,
        aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
        offset: float = 0.0,
        round_base: bool = False,
        strides_from_grid: bool = False,
    ):
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.sizes = tuple(tuple(s) if isinstance(s, (tuple, list)) else s for s in sizes)
        self.scales = tuple(scales) if scales is not None else None
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.offset = float(offset)
        self.round_base = bool(round_base)
        self.strides_from_grid = bool(strides_from_grid)
        self.level_sizes = level_anchor_sizes(self.sizes, self.scales)
        if len(self.level_sizes) != len(self.strides):
            raise ValueError(f"{len(self.level_sizes)} anchor sizes for {len(self.strides)} strides")
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        """A: anchors at each location (9 in the paper)."""
        return len(self.level_sizes[0]) * len(self.aspect_ratios)

    def num_anchors_per_level(self, image_size: tuple[int, int], grid_sizes=None) -> list[int]:
        grids = grid_sizes if grid_sizes is not None else feature_map_sizes(image_size, self.strides)
        return [int(h) * int(w) * self.num_anchors_per_location for h, w in grids]

    def extra_repr(self) -> str:
        return (
            f"strides={self.strides}, sizes={self.sizes}, scales={self.scales}, "
            f"aspect_ratios={self.aspect_ratios}, offset={self.offset}, round_base={self.round_base}"
        )

    def forward(
        self,
        image_size: tuple[int, int],
        grid_sizes: Sequence[tuple[int, int]] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        image_size = (int(image_size[0]), int(image_size[1]))
        grids = tuple((int(h), int(w)) for h, w in grid_sizes) if grid_sizes is not None else None
        key = (image_size, grids, dtype, str(device))
        anchors = self._cache.get(key)
        if anchors is None:
            if len(self._cache) > 32:  # many input sizes (multi-scale training): keep memory bounded
                self._cache.clear()
            anchors = generate_anchors(
                image_size,
                self.strides,
                self.sizes,
                self.scales,
                self.aspect_ratios,
                self.offset,
                round_base=self.round_base,
                grid_sizes=grids,
                strides_from_grid=self.strides_from_grid,
                dtype=dtype,
                device=device,
            )
            self._cache[key] = anchors
        return anchors


# ---------------------------------------------------------------------------------------------------
# Anchors fitted to a dataset (notebook 11): notebook 01's coverage question asked of your own boxes.

FIT_BASE_SIZES = (8, 10, 12, 14, 16, 20, 24, 28, 32)
"""The P3 base sizes ``fit_anchor_sizes`` tries by default (each level doubles it, as the paper's
32..512 do): from one stride (8) up to the paper's 32."""


@dataclass(frozen=True)
class AnchorCoverage:
    """How well a set of anchors covers a dataset's boxes.

    Attributes:
        sizes: the base anchor size of each level (``scales`` multiply it).
        input_scale: the factor the images (and boxes) were resized by before matching.
        threshold: the IoU an anchor needs to be a positive (the paper's 0.5).
        box_sizes: ``Tensor[N]`` float64, each object's size ``sqrt(w * h)`` in the original pixels.
        best_iou: ``Tensor[N]`` float64, each object's best IoU with any anchor.
    """

    sizes: tuple[float, ...]
    input_scale: float
    threshold: float
    box_sizes: Tensor = field(repr=False)
    best_iou: Tensor = field(repr=False)

    @property
    def num_objects(self) -> int:
        return int(self.best_iou.numel())

    @property
    def matched(self) -> Tensor:
        """``Tensor[N]`` bool: the objects some anchor overlaps at ``threshold`` or more."""
        return self.best_iou >= self.threshold

    @property
    def num_unmatched(self) -> int:
        """Objects no anchor reaches at ``threshold``: only a low-quality match can teach them."""
        return int((~self.matched).sum())

    @property
    def coverage(self) -> float:
        """The share of objects with an anchor at IoU >= ``threshold`` (1.0 for no objects)."""
        return 1.0 if self.num_objects == 0 else float(self.matched.double().mean())

    def summary(self) -> str:
        """One line: the sizes, the coverage and the unmatched count."""
        sizes = ", ".join(f"{s:g}" for s in self.sizes)
        scale = "" if self.input_scale == 1 else f" on images scaled x{self.input_scale:g}"
        return (
            f"anchors ({sizes}){scale}: {self.coverage:.1%} of {self.num_objects} objects have an anchor "
            f"at IoU >= {self.threshold:g}; {self.num_unmatched} have none"
        )


@dataclass(frozen=True)
class AnchorFit:
    """What ``fit_anchor_sizes`` recommends.

    Attributes:
        sizes: the recommended base size per level (``RetinaNetConfig.anchor_sizes``).
        input_scale: the recommended resize of the images (1.0: as they are).
        coverage: the ``AnchorCoverage`` of the recommendation.
        current: the ``AnchorCoverage`` of the anchors the fit started from (the paper's by default).
        tried: ``{(input_scale, base_size): AnchorCoverage}`` of every candidate.
    """

    sizes: tuple[float, ...]
    input_scale: float
    coverage: AnchorCoverage
    current: AnchorCoverage
    tried: dict[tuple[float, float], AnchorCoverage]


def dataset_boxes(dataset) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """Every image's boxes and size, read from the annotations (no image is decoded).

    Args:
        dataset: a ``DetectionDataset`` (``CocoDetection``, ``VOCDetection``, what ``open_dataset`` gives).

    Returns:
        ``(boxes, image_sizes)``: one ``Tensor[N_i, 4]`` xyxy float64 and one ``(H, W)`` per image.
    """
    if not hasattr(dataset, "get_target") or not hasattr(dataset, "_image_size"):
        raise ValueError(
            f"dataset_boxes needs a DetectionDataset (CocoDetection, VOCDetection), got {type(dataset).__name__}"
        )
    boxes, sizes = [], []
    for i in range(len(dataset)):
        boxes.append(dataset.get_target(i)["boxes"].double())
        width, height = dataset._image_size(i)
        sizes.append((int(round(height)), int(round(width))))
    return boxes, sizes


def _best_iou_per_box(boxes: Tensor, anchors: Tensor, chunk: int = 32) -> Tensor:
    """Each box's best IoU with any anchor, a few boxes at a time (large images have ~10^6 anchors)."""
    from .boxes import box_iou

    if boxes.shape[0] == 0:
        return boxes.new_zeros(0)
    return torch.cat([box_iou(part, anchors).amax(dim=1) for part in boxes.split(chunk)])


def anchor_coverage(
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    sizes: SizeSpec = PAPER_ANCHOR_SIZES,
    strides: Sequence[int] = PAPER_STRIDES,
    scales: Sequence[float] | None = PAPER_SCALES,
    aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
    offset: float = 0.0,
    threshold: float = 0.5,
    input_scale: float = 1.0,
) -> AnchorCoverage:
    """Each object's best IoU with the anchors of its image, as the matcher would compute it.

    Args:
        boxes: one ``Tensor[N_i, 4]`` xyxy per image, in its pixels.
        image_sizes: one ``(H, W)`` per image (the anchors tile the input the network sees).
        sizes, strides, scales, aspect_ratios, offset: the anchors (see ``anchors_per_level``).
        threshold: the foreground IoU (the paper's 0.5).
        input_scale: resize images and boxes by this factor first (what a larger ``image_size`` does).

    Returns:
        An ``AnchorCoverage``; ``box_sizes`` are in the original pixels.
    """
    if len(boxes) != len(image_sizes):
        raise ValueError(f"anchor_coverage: {len(boxes)} box tensors for {len(image_sizes)} image sizes")
    if not 0 < threshold <= 1:
        raise ValueError(f"anchor_coverage: threshold must be in (0, 1], got {threshold!r}")
    if not input_scale > 0:
        raise ValueError(f"anchor_coverage: input_scale must be > 0, got {input_scale!r}")
    cache: dict[tuple[int, int], Tensor] = {}
    best, box_sizes = [], []
    for b, (h, w) in zip(boxes, image_sizes):
        b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
        size = (max(1, round(h * input_scale)), max(1, round(w * input_scale)))
        if size not in cache:
            cache[size] = generate_anchors(size, strides, sizes, scales, aspect_ratios, offset, dtype=torch.float64)
        best.append(_best_iou_per_box(b * input_scale, cache[size]))
        box_sizes.append(((b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)).sqrt())
    per_level = level_anchor_sizes(sizes, scales)
    base = tuple(float(level[0]) for level in per_level)
    empty = torch.zeros(0, dtype=torch.float64)
    return AnchorCoverage(
        base,
        float(input_scale),
        float(threshold),
        torch.cat(box_sizes) if box_sizes else empty,
        torch.cat(best) if best else empty,
    )


def fit_anchor_sizes(
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    base_sizes: Sequence[float] = FIT_BASE_SIZES,
    input_scales: Sequence[float] = (1.0,),
    strides: Sequence[int] = PAPER_STRIDES,
    scales: Sequence[float] | None = PAPER_SCALES,
    aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
    offset: float = 0.0,
    threshold: float = 0.5,
    current_sizes: SizeSpec = PAPER_ANCHOR_SIZES,
) -> AnchorFit:
    """The anchor sizes (and input scale) that give the most objects an anchor at IoU >= ``threshold``.

    Every candidate keeps the paper's shape of the pyramid: P3's base size ``b``, then ``2b``,
    ``4b``, ... one octave per level (the strides double too), times the same scales and aspect
    ratios. Each pair ``(input_scale, b)`` is scored by its coverage; ties go to the higher mean
    best IoU, then to the smaller input (cheaper).

    Args:
        boxes, image_sizes: the dataset's boxes and image sizes (``dataset_boxes(dataset)``).
        base_sizes: the P3 base sizes to try.
        input_scales: the image resizes to try (2.0 doubles every object, like halving the anchors
            and the strides, at four times the compute).
        strides, scales, aspect_ratios, offset, threshold: as in ``anchor_coverage``.
        current_sizes: the anchors to compare with (the paper's 32..512).

    Returns:
        An ``AnchorFit``: the recommended ``sizes`` and ``input_scale``, their coverage, the current
        anchors' coverage and every candidate's (to plot, or to choose another under a constraint).
    """
    if not base_sizes or not input_scales:
        raise ValueError("fit_anchor_sizes: give at least one base size and one input scale")
    if any(not b > 0 for b in base_sizes):
        raise ValueError(f"fit_anchor_sizes: base sizes must be > 0, got {tuple(base_sizes)}")
    kwargs = dict(strides=strides, scales=scales, aspect_ratios=aspect_ratios, offset=offset, threshold=threshold)
    current = anchor_coverage(boxes, image_sizes, current_sizes, **kwargs)
    tried: dict[tuple[float, float], AnchorCoverage] = {}
    best_key, best_cov = None, None
    for input_scale in sorted(input_scales):
        for base in base_sizes:
            sizes = tuple(float(base) * 2**level for level in range(len(strides)))
            cov = anchor_coverage(boxes, image_sizes, sizes, input_scale=input_scale, **kwargs)
            tried[(float(input_scale), float(base))] = cov
            mean_iou = float(cov.best_iou.mean()) if cov.num_objects else 0.0
            key = (cov.num_objects - cov.num_unmatched, round(mean_iou, 6))
            if best_key is None or key > best_key:
                best_key, best_cov = key, cov
    return AnchorFit(best_cov.sizes, best_cov.input_scale, best_cov, current, tried)
