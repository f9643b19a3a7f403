"""The numbers the course's figures draw, computed with the package and tested.

``retina_edu.viz`` only draws: every quantity a figure or a widget shows comes from here (or from
the core modules) so that it has one source of truth and a test. All functions are plain torch.
One module per notebook topic; every public name is re-exported here, so
``from retina_edu.analysis import X`` is the way to use them:

=============  ========  ================================================================================
module         notebook  what it computes
=============  ========  ================================================================================
``matching``   01-02     :func:`match_counts`, :func:`best_iou`, :func:`anchor_grid`: anchor labels, the
                         IoU they come from, one level's anchors of one shape as a grid
``focal``      03        :func:`focal_loss_vs_pt`, :func:`focal_loss_both_sides`, :func:`loss_shares`,
                         :func:`illustrative_batch`: the focal loss's curves and how its total splits
                         (:data:`LOSS_GROUPS`, :data:`EASY_THRESHOLD`)
``loss``       04        :func:`box_losses_vs_offset`, :func:`positive_box_targets`,
                         :func:`box_losses_per_anchor`, :func:`quadratic_share`,
                         :func:`loss_sums_per_image`, :func:`normalise_loss`: box losses, normalisers
``network``    05        :func:`box_level_assignment`, :func:`network_shapes`: levels and tensor shapes
``prior``      06        :func:`prior_initial_loss`, :func:`prior_first_steps`: the prior initialisation
``training``   08        :func:`missed_objects`: objects a trained detector misses
``lossmaps``   09        :func:`anchor_outputs`, :func:`anchor_loss_map`, :func:`threshold_and_nms`: where
                         one image's loss sits, what a threshold and NMS keep
``figure4``    10        :func:`anchor_losses`, :func:`loss_cdf`, :func:`hardest_share`: the paper's
                         Figure 4 (:data:`FIGURE4_GAMMAS`)
=============  ========  ================================================================================

These modules import only core modules (boxes, anchors, matching, losses, postprocess), never ``viz`` or
``train``.
"""

from __future__ import annotations

from .figure4 import FIGURE4_GAMMAS, anchor_losses, hardest_share, loss_cdf
from .focal import (
    EASY_THRESHOLD,
    ILLUSTRATIVE_NEGATIVES_PER_POSITIVE,
    LOSS_GROUPS,
    focal_loss_both_sides,
    focal_loss_vs_pt,
    illustrative_batch,
    loss_shares,
)
from .loss import (
    box_losses_per_anchor,
    box_losses_vs_offset,
    loss_sums_per_image,
    normalise_loss,
    positive_box_targets,
    quadratic_share,
)
from .lossmaps import LOSS_MAP_ALPHA, MATCH_IOU, anchor_loss_map, anchor_outputs, threshold_and_nms
from .matching import anchor_grid, best_iou, match_counts
from .network import box_level_assignment, network_shapes
from .prior import prior_first_steps, prior_initial_loss
from .training import missed_objects

__all__ = [
    "EASY_THRESHOLD",
    "FIGURE4_GAMMAS",
    "ILLUSTRATIVE_NEGATIVES_PER_POSITIVE",
    "LOSS_GROUPS",
    "LOSS_MAP_ALPHA",
    "MATCH_IOU",
    "anchor_grid",
    "anchor_loss_map",
    "anchor_losses",
    "anchor_outputs",
    "best_iou",
    "box_level_assignment",
    "box_losses_per_anchor",
    "box_losses_vs_offset",
    "focal_loss_both_sides",
    "focal_loss_vs_pt",
    "hardest_share",
    "illustrative_batch",
    "loss_cdf",
    "loss_shares",
    "loss_sums_per_image",
    "match_counts",
    "missed_objects",
    "network_shapes",
    "normalise_loss",
    "positive_box_targets",
    "prior_first_steps",
    "prior_initial_loss",
    "quadratic_share",
    "threshold_and_nms",
]
