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

import torch
from torch import Tensor, nn

__all__ = [
    "PAPER_ANCHOR_SIZES",
    "PAPER_ASPECT_RATIOS",
    "PAPER_SCALES",
    "PAPER_STRIDES",
    "PYRAMID_LEVEL_NAMES",
    "AnchorGenerator",
    "anchors_per_level",
    "cell_anchors",
    "feature_map_sizes",
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


def _level_grid(
    base: Tensor, grid: tuple[int, int], stride: tuple[float, float], offset: float
) -> Tensor:
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
