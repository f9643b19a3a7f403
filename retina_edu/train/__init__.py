"""Training: presets, the loop, checkpoints, a time budget, several GPUs (notebook 08).

The loop is the one you would write by hand (``train_step`` fits on a screen):

    images, targets -> model(images, targets) -> {"classification", "bbox_regression"}
    loss = sum -> backward -> clip gradients -> optimizer step -> learning-rate step

The package, by job:

- :mod:`.presets`: ``Preset`` (``Preset.cpu()`` / ``Preset.gpu()``), ``choose_preset``, the optimiser
  (``make_optimizer``: the paper's SGD or AdamW) and the schedule (``lr_factor``: warmup, then cosine or step).
- :mod:`.loop`: ``train`` as its named steps (set up, one epoch, finish) and ``train_step``: mixed precision
  on CUDA, DistributedDataParallel when started by ``torchrun``.
- :mod:`.state`: the run's state (``_Run``, ``_TrainState``), resuming it, saving it, and what ``train``
  returns and raises (``TrainResult``, ``TrainingDiverged``, ``TrainingInterrupted``): a NaN guard that never
  saves broken weights, Ctrl-C that saves a checkpoint which resumes to the same weights.
- :mod:`.validation`: validation during training and at the end (after the final checkpoint).
- :mod:`.progress`: the progress bar, one history record per step (the callbacks), the budget's time report.
- :mod:`.data`: the sampler and dataset view that make a resumed run see the same batches.
- :mod:`.checkpoints`: atomic checkpoints that open without running any code (``weights_only=True``),
  ``load_model``, the output folder's checks, the random generators' state, the data's fingerprint.
- :mod:`.budget`: a time budget (``minutes``: the steps are fitted to the machine and the whole schedule
  runs over them).

The device helpers live in :mod:`retina_edu.device`; they are re-exported here because notebooks and the
ablations import them from ``retina_edu.train``. To replace a function in a test, patch it in the submodule
that calls it (``retina_edu.train.loop.train_step``, ``retina_edu.train.budget._clock``).
"""

from ..device import (
    average_buffers,
    cpu_bf16_speedup,
    cpu_has_native_bf16,
    default_device,
    dist_is_on,
    is_main_process,
    mixed_precision_dtype,
    setup_distributed,
)
from .budget import BUDGET_EVAL_OVERHEAD, BUDGET_EVAL_SAMPLE, BUDGET_MEASURED_STEPS, BUDGET_SAFETY
from .budget import _steps_in_budget as _steps_in_budget  # the budget tests call it
from .checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    HISTORY_NAME,
    OutputError,
    check_output_folder,
    data_fingerprint,
    find_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from .loop import train, train_step
from .presets import OPTIMIZERS, PAPER_LR_PER_16_IMAGES, SCHEDULES, Preset, choose_preset, lr_factor, make_optimizer
from .state import RESUMABLE_CHANGES, TrainingDiverged, TrainingInterrupted, TrainResult

__all__ = [
    "BUDGET_EVAL_OVERHEAD",
    "BUDGET_EVAL_SAMPLE",
    "BUDGET_MEASURED_STEPS",
    "BUDGET_SAFETY",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "HISTORY_NAME",
    "OPTIMIZERS",
    "PAPER_LR_PER_16_IMAGES",
    "RESUMABLE_CHANGES",
    "SCHEDULES",
    "OutputError",
    "Preset",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_output_folder",
    "choose_preset",
    "data_fingerprint",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "lr_factor",
    "make_optimizer",
    "save_checkpoint",
    "train",
    "train_step",
    # moved to retina_edu.device, re-exported here (notebooks and ablations import them from train)
    "average_buffers",
    "cpu_bf16_speedup",
    "cpu_has_native_bf16",
    "default_device",
    "dist_is_on",
    "is_main_process",
    "mixed_precision_dtype",
    "setup_distributed",
]
