"""The explorer contract (retina_edu.viz._explorer), checked on every explorer of the course.

Each explorer is a VBox of [controls, readout, image] with ``.controls``, ``.readout``, ``.image``,
``.figure``, ``.draw_count`` and ``.result``; moving a control redraws once and changes the readout,
the image and the result; no pyplot figure is left open; sliders report on release.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from retina_edu.anchors import anchor_coverage, generate_anchors
from retina_edu.matching import BACKGROUND
from retina_edu.viz import (
    anchor_explorer,
    box_loss_explorer,
    focal_loss_explorer,
    loss_cdf_explorer,
    loss_map_explorer,
    loss_share_explorer,
    matching_explorer,
    nms_explorer,
    prior_explorer,
    threshold_nms_explorer,
)
from retina_edu.viz._explorer import PIXEL_RATIO
from retina_edu.viz.network import box_level_explorer
from retina_edu.viz.realdata import anchor_fit_explorer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = torch.full((3, 128, 128), 0.5)
GT = torch.tensor([[10.0, 12.0, 70.0, 60.0], [90.0, 90.0, 102.0, 101.0]])


def _logits_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(2000, generator=g) < 0.01).float()
    return torch.randn(2000, generator=g) - 3 + 4 * targets, targets


def _candidates() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 10, 50, 50], [60, 20, 90, 80]]).repeat_interleave(6, 0)
    boxes = centres + 3 * torch.randn(12, 4, generator=g)
    return boxes, torch.rand(12, generator=g), torch.tensor([0] * 6 + [1] * 6)


def _threshold_nms_explorer() -> Any:
    candidates = dict(zip(("boxes", "scores", "labels"), _candidates()))
    return threshold_nms_explorer(
        [np.zeros((100, 100, 3))], [candidates], [{"boxes": GT, "labels": torch.tensor([0, 1])}]
    )


def _loss_map_explorer() -> Any:
    """One 32-pixel image: two levels of 4x4 and 2x2 locations, 3 anchors each, 2 classes, one object."""
    g = torch.Generator().manual_seed(0)
    matches = torch.full((60,), BACKGROUND)
    matches[6:9] = 0
    outputs = {"cls_logits": torch.randn(60, 2, generator=g) - 3.0, "matches": matches, "labels": matches.clamp(min=0)}
    outputs.update(grid_sizes=[(4, 4), (2, 2)], padded_size=(32, 32), boxes=GT[:1] / 4, gt_labels=torch.tensor([0]))
    return loss_map_explorer([np.zeros((32, 32, 3))], [outputs])


def _anchor_fit_explorer() -> Any:
    sizes = {base: tuple(base * 2**k for k in range(5)) for base in (8.0, 32.0)}
    coverages = {base: anchor_coverage([GT], [(128, 128)], sizes=s) for base, s in sizes.items()}
    return anchor_fit_explorer(coverages, reference=anchor_coverage([GT], [(128, 128)]))


# (name, build, control to move, its new value)
EXPLORERS: list[tuple[str, Callable[[], Any], str, Any]] = [
    ("anchor", lambda: anchor_explorer(IMAGE), "level", 3),
    ("matching", lambda: matching_explorer(IMAGE, generate_anchors((128, 128)), GT), "fg_iou", 0.7),
    ("focal", lambda: focal_loss_explorer(), "gamma", 0.5),
    ("loss share", lambda: loss_share_explorer(*_logits_and_targets()), "gamma", 0.5),
    (
        "box loss",
        lambda: box_loss_explorer(0.2 * torch.randn(100, 4, generator=torch.Generator().manual_seed(0))),
        "beta",
        0.3,
    ),
    ("box level", lambda: box_level_explorer(64.0), "size", 181.0),
    ("prior", lambda: prior_explorer(100, 20_000, 4), "pi", 0.5),
    ("nms", lambda: nms_explorer(np.zeros((100, 100, 3)), *_candidates(), score_thresh=0.0), "iou", 0.95),
    ("threshold nms", _threshold_nms_explorer, "score", 0.05),
    ("loss map", _loss_map_explorer, "gamma", 0.5),
    ("loss cdf", lambda: loss_cdf_explorer(torch.randn(40), torch.randn(300, 3) - 3), "gamma", 0.5),
    ("anchor fit", _anchor_fit_explorer, "base", 32.0),
]


def _differs(before: Any, after: Any) -> bool:
    """Whether two results differ, tensors (also inside dicts, lists and dataclasses) compared by value."""
    if dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after):
        before, after = dataclasses.astuple(before), dataclasses.astuple(after)
    if isinstance(before, dict) and isinstance(after, dict):
        return before.keys() != after.keys() or any(_differs(before[k], after[k]) for k in before)
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)):
        return len(before) != len(after) or any(_differs(a, b) for a, b in zip(before, after))
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        return before.shape != after.shape or not torch.equal(before, after)
    return before != after


@pytest.fixture(params=EXPLORERS, ids=[name for name, *_ in EXPLORERS])
def explorer(request: pytest.FixtureRequest) -> tuple[Any, str, Any]:
    _, build, control, value = request.param
    plt.close("all")
    return build(), control, value


def test_explorer_is_controls_over_a_readout_over_an_image(explorer) -> None:
    box, control, _ = explorer
    assert isinstance(box, widgets.VBox)
    row, readout, image = box.children
    assert list(row.children) == list(box.controls.values()) and control in box.controls
    assert readout is box.readout and isinstance(readout, widgets.HTML) and readout.value
    assert image is box.image and image.value[:8] == PNG_SIGNATURE
    assert isinstance(box.figure, Figure) and box.figure.axes
    assert box.draw_count == 1 and box.result is not None


def test_sliders_report_on_release(explorer) -> None:
    box, _, _ = explorer
    sliders = [c for c in box.controls.values() if hasattr(c, "continuous_update")]
    assert sliders and all(c.continuous_update is False for c in sliders)


def test_moving_a_control_redraws_once_and_changes_the_readout(explorer) -> None:
    box, control, value = explorer
    figure, readout, image, result = box.figure, box.readout.value, box.image.value, box.result
    box.controls[control].value = value
    assert box.draw_count == 2
    assert box.figure is figure  # redrawn in place
    assert box.readout.value != readout
    assert box.image.value != image and box.image.value[:8] == PNG_SIGNATURE
    assert _differs(result, box.result)


def test_explorers_leave_no_pyplot_figures_open(explorer) -> None:
    box, control, value = explorer
    box.controls[control].value = value
    assert plt.get_fignums() == []


def test_pictures_are_rendered_at_the_screen_density_and_shown_at_their_own_width(explorer) -> None:
    """Sharp in JupyterLab: PIXEL_RATIO device pixels per CSS pixel, and the <img> pinned to the figure's width."""
    import io

    from PIL import Image

    box, _, _ = explorer
    width_css = round(box.figure.get_figwidth() * box.figure.dpi)
    png = Image.open(io.BytesIO(box.image.value))
    assert abs(png.size[0] - PIXEL_RATIO * width_css) <= 2
    assert box.image.layout.width == f"{width_css}px" and box.display_width == width_css
    assert box.image.layout.max_width == "100%"  # a narrower column shrinks it, never stretches it
