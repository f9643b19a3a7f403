"""Figures and widgets of the course, one module per notebook topic; viz only draws.

Whatever a figure shows is computed below viz (in :mod:`retina_edu.analysis` or the core modules)
by a function that a test checks. Each widget (``*_explorer``) sits beside its static twin and
follows one contract (:mod:`retina_edu.viz._explorer`). ``matplotlib.pyplot`` and ipywidgets are
imported only inside the functions that need them, so importing this package is cheap.

===================  ==============================================================  ===========
module               what it draws                                                   notebooks
===================  ==============================================================  ===========
``_common``          array conversion, ``ImageLike``/``BoxesLike``, palettes, colours  all
``_explorer``        the widget contract: controls, readout, figure, redraw          01-07, 09-11
``notebook``         ``setup_notebook``                                              00-11
``images``           images, boxes, detections, grids                                00, 02, 07-09
``anchors``          one level's anchors on an image, and its explorer               01
``matching``         positive / ignored / negative anchors, IoU histogram, explorer  02
``focal``            Figure 1, loss / factor / gradient panels, loss shares          03
``network``          architecture, feature maps, object size -> level, explorer      05
``inference``        score maps, NMS, the threshold/NMS explorer                     07, 09
``training``         the live loss plot, loss curves of several runs                 06, 08, 10
``ablations``        bars over seeds, Figure 4 and its explorer                      10
``loss``             box losses side by side, the normaliser                          04
``subnets``          the prior and the first steps                                    06
``lossmaps``         per-anchor loss maps of a trained detector                       09
``realdata``         real images: tiles, crowns, fitted anchors                       11
===================  ==============================================================  ===========

``from retina_edu.viz import X`` works for every name below.
"""

# ruff: noqa: F403, F405

from ..analysis import focal_loss_vs_pt, loss_shares, match_counts
from ..anchors import PYRAMID_LEVEL_NAMES
from ._common import MATCH_COLORS, BoxesLike, ImageLike, class_color, gt_color, to_display_array
from .ablations import loss_cdf_explorer, loss_cdf_readout, plot_ablation_bars, plot_loss_cdfs
from .anchors import anchor_explorer, anchor_figure, anchor_readout, draw_anchor_level
from .focal import (
    FOCAL_GAMMAS,
    LOSS_GROUPS,
    focal_loss_explorer,
    focal_loss_readout,
    loss_share_explorer,
    loss_share_readout,
    plot_focal_loss_curves,
    plot_focal_loss_panels,
    plot_loss_shares,
)
from .images import draw_boxes, show_detections, show_grid, show_image
from .inference import (
    draw_nms,
    draw_threshold_nms,
    nms_explorer,
    nms_readout,
    show_level_maps,
    threshold_nms_explorer,
    threshold_nms_readout,
)
from .matching import draw_matching, matching_explorer, matching_figure, matching_readout
from .network import (
    box_level_explorer,
    box_level_readout,
    draw_box_levels,
    plot_architecture,
    plot_level_assignment,
    show_feature_maps,
)
from .notebook import setup_notebook
from .training import LiveLossPlot, plot_loss_curves

__all__ = [
    "FOCAL_GAMMAS",
    "LOSS_GROUPS",
    "MATCH_COLORS",
    "PYRAMID_LEVEL_NAMES",
    "BoxesLike",
    "ImageLike",
    "LiveLossPlot",
    "anchor_explorer",
    "box_level_explorer",
    "box_level_readout",
    "draw_box_levels",
    "plot_architecture",
    "anchor_figure",
    "anchor_readout",
    "class_color",
    "draw_anchor_level",
    "draw_boxes",
    "draw_matching",
    "draw_nms",
    "draw_threshold_nms",
    "focal_loss_explorer",
    "focal_loss_readout",
    "focal_loss_vs_pt",
    "gt_color",
    "loss_cdf_explorer",
    "loss_cdf_readout",
    "loss_share_explorer",
    "loss_share_readout",
    "loss_shares",
    "match_counts",
    "matching_explorer",
    "matching_figure",
    "matching_readout",
    "nms_explorer",
    "nms_readout",
    "plot_ablation_bars",
    "plot_focal_loss_curves",
    "plot_focal_loss_panels",
    "plot_level_assignment",
    "plot_loss_cdfs",
    "plot_loss_curves",
    "plot_loss_shares",
    "setup_notebook",
    "show_detections",
    "show_feature_maps",
    "show_grid",
    "show_image",
    "show_level_maps",
    "threshold_nms_explorer",
    "threshold_nms_readout",
    "to_display_array",
]

# Modules whose public names come through their own ``__all__``.
from . import loss as _loss
from . import lossmaps as _lossmaps
from . import realdata as _realdata
from . import subnets as _subnets
from .loss import *
from .lossmaps import *
from .realdata import *
from .subnets import *

__all__ += [*_loss.__all__, *_subnets.__all__, *_lossmaps.__all__, *_realdata.__all__]
