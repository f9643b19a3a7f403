"""Ablations: the paper's Table 1 and Figure 4, reproduced at small scale (notebook 10).

One ablation is one training run, described by a small dataclass::

    from retina_edu.ablations import Ablation, run_ablation
    ce = Ablation("CE α=0.75", gamma=0.0, alpha=0.75, seed=0, steps=80)
    result = run_ablation(ce, train_data, val_data, cache_dir="../data/ablations")
    result.metrics["AP"], result.history["loss"]     # result["metrics"] works too

``run_ablation`` trains with :func:`retina_edu.train.train` (the CPU preset, shrunk to
``image_size`` pixels and ``steps`` steps), scores the model with pycocotools on the first
``val_images`` images of the val split, and records, in the same pass over the val images, the
class logits of the positive anchors and of a sample of the negative anchors: what the paper's
Figure 4 is drawn from. The result (an :class:`AblationResult`) is cached as JSON (the logits in a
``.pt`` beside it) under a key made of the whole configuration and the data's identity, so a
second call with the same ablation trains nothing.

The paper starts every run from an ImageNet-pretrained ResNet and trains the subnets from scratch.
Offline and on a CPU budget, ``Ablation.trunk`` plays that part: one run trained once (and cached)
whose backbone and FPN the ablations start from, frozen, with new subnets
(:func:`pretrained_trunk`). The per-study lists of runs (:func:`gamma_alpha_runs`,
:func:`prior_runs`, :func:`anchor_runs`, :func:`ohem_runs`) are shared by notebook 10 and
``benchmarks/ablations.py``. Figure 4's maths (``anchor_losses``, ``loss_cdf``, ``hardest_share``)
lives in :mod:`retina_edu.analysis`, re-exported here; the logits it needs come from
:func:`evaluate_with_anchor_logits`.

The package, one job a module:

    config     Ablation (one run), make_preset, the cache key (ablation_key, dataset_fingerprint)
    figure4    evaluate_with_anchor_logits: mAP and the anchors' logits in one pass
    ohem       OHEMRetinaNet (Table 1d)
    result     AblationResult, load_anchor_logits
    runner     run_ablation and its steps, load_trunk
    parallel   run_ablations: several runs at once, in worker processes on the CPU
    studies    the runs of each study, PAPER_TABLE1(D), PAPER_OPTIMIZER, summarise, paired_comparison

Every name is importable from here: ``from retina_edu.ablations import Ablation, run_ablation``.
"""

from ..analysis import FIGURE4_GAMMAS, anchor_losses, hardest_share, loss_cdf
from .config import CACHE_VERSION, Ablation, ablation_key, dataset_fingerprint, make_preset
from .config import CPU_PRESET_IMAGE_SIZE as CPU_PRESET_IMAGE_SIZE  # noqa: F401 (kept importable from here)
from .figure4 import MAX_NEGATIVES, anchor_logits, evaluate_with_anchor_logits
from .figure4 import _split_anchor_logits as _split_anchor_logits  # noqa: F401 (tests/test_ablations.py)
from .ohem import OHEMRetinaNet
from .parallel import MAX_PROCESSES, run_ablations
from .result import AblationResult, load_anchor_logits
from .runner import TRUNK_PREFIXES, load_trunk, run_ablation
from .studies import (
    CE_ALPHAS,
    FL_SETTINGS,
    PAPER_BEST_OHEM,
    PAPER_OPTIMIZER,
    PAPER_TABLE1,
    PAPER_TABLE1D,
    anchor_runs,
    gamma_alpha_runs,
    ohem_runs,
    paired_comparison,
    pretrained_trunk,
    prior_runs,
    summarise,
)

__all__ = [
    "CACHE_VERSION",
    "CE_ALPHAS",
    "FIGURE4_GAMMAS",
    "FL_SETTINGS",
    "MAX_NEGATIVES",
    "MAX_PROCESSES",
    "PAPER_BEST_OHEM",
    "PAPER_OPTIMIZER",
    "PAPER_TABLE1",
    "PAPER_TABLE1D",
    "TRUNK_PREFIXES",
    "Ablation",
    "AblationResult",
    "OHEMRetinaNet",
    "ablation_key",
    "anchor_logits",
    "anchor_losses",
    "anchor_runs",
    "dataset_fingerprint",
    "evaluate_with_anchor_logits",
    "gamma_alpha_runs",
    "hardest_share",
    "load_anchor_logits",
    "load_trunk",
    "loss_cdf",
    "make_preset",
    "ohem_runs",
    "paired_comparison",
    "pretrained_trunk",
    "prior_runs",
    "run_ablation",
    "run_ablations",
    "summarise",
]
