"""The runner: one ablation from its cache, or trained and evaluated and then cached.

``run_ablation`` reads as its steps: the cache (:func:`_cached`), the model when ``train()``
cannot build it itself (:func:`_build_model`: OHEM, or a pretrained trunk), training that may
diverge (:func:`_train_or_diverge`), the mAP and Figure-4 pass (:func:`_evaluate_run`), then the
result written atomically beside its files.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from .. import train as training
from ..device import default_device
from ..files import save_torch_atomic, write_json_atomic
from ..model import RetinaNet
from .config import CACHE_VERSION, Ablation, ablation_key, make_preset
from .figure4 import evaluate_with_anchor_logits
from .ohem import OHEMRetinaNet
from .result import AblationResult

__all__ = ["TRUNK_PREFIXES", "load_trunk", "run_ablation"]

TRUNK_PREFIXES = ("backbone.", "fpn.")  # what a pretrained trunk holds: the subnets start new


def run_ablation(
    ablation: Ablation,
    train_data: Dataset,
    val_data: Dataset | None,
    cache_dir: str | Path = "data/ablations",
    device: torch.device | str | None = None,
    progress: bool = False,
    force: bool = False,
) -> AblationResult:
    """Train and evaluate one ablation, or return its cached result.

    Args:
        ablation: the configuration.
        train_data: the training split (``CocoDetection``); the run uses its first images.
        val_data: the val split; mAP and the Figure-4 logits come from its first
            ``ablation.val_images`` images. None: no evaluation.
        cache_dir: results go to ``cache_dir/<key>.json`` (+ ``<key>.pt``, the anchor logits, and
            ``<key>.weights.pt`` with ``keep_weights``), written atomically; ``notebooks/`` use
            ``"../data/ablations"``.
        device: default CUDA when available, else the CPU.
        progress: a progress bar while training.
        force: train again even when a cached result exists (and replace it).

    Returns:
        An :class:`AblationResult` (``cached`` says whether it came from the cache).
    """
    cache_dir = Path(cache_dir)
    key = ablation_key(ablation, train_data, val_data)
    if not force and (hit := _cached(ablation, key, cache_dir)) is not None:
        return hit
    device = torch.device(device) if device is not None else default_device()
    preset, num_images = make_preset(ablation, len(train_data))
    subset = _Subset(train_data, range(num_images))
    trunk = None
    if ablation.trunk is not None:
        trunk = run_ablation(ablation.trunk, train_data, val_data, cache_dir, device, progress)
    model = _build_model(ablation, preset, len(subset.classes), trunk)
    run = _train_or_diverge(preset, subset, device, progress, model)
    evaluation = _Evaluation()
    if run.trained is not None and val_data is not None:
        evaluation = _evaluate_run(run.trained.model, ablation, val_data, device, cache_dir / f"{key}.pt")
    weights = None
    if run.trained is not None and ablation.keep_weights:
        weights = _save_weights(run.trained.model, cache_dir, f"{key}.weights.pt")
    result = AblationResult(
        key=key,
        name=ablation.name,
        ablation=ablation,
        preset=preset.to_dict(),
        num_train_images=num_images,
        num_val_images=_num_val_images(ablation, val_data),
        weights=weights,
        anchor_logits=f"{key}.pt" if evaluation.metrics is not None else None,
        trunk_key=trunk.key if trunk is not None else None,
        trunk_metrics=trunk.metrics if trunk is not None else None,
        **run.result_fields(),
        **_environment(device),
        **evaluation._asdict(),
    )
    write_json_atomic(cache_dir / f"{key}.json", result.to_json())
    return _with_files(result, ablation, cache_dir, cached=False)


def _cached(ablation: Ablation, key: str, cache_dir: Path) -> AblationResult | None:
    """The cached result for ``key``, or None when there is none, it is from an older runner, or it
    lacks the weights that ``keep_weights`` asks for (a run that diverged has none to keep)."""
    path = cache_dir / f"{key}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("cache_version") != CACHE_VERSION or data.get("key") != key:
        return None
    try:
        result = _with_files(AblationResult.from_json(data), ablation, cache_dir, cached=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: not an ablation result ({e}); delete it to run again") from e
    if ablation.keep_weights and not result.weights_path and not result.diverged_at:
        return None
    return result


def _with_files(result: AblationResult, ablation: Ablation, cache_dir: Path, cached: bool) -> AblationResult:
    """``result`` under the caller's name, with the full paths of the files that exist beside it."""

    def existing(name: str | None) -> str | None:
        return str(cache_dir / name) if name and (cache_dir / name).is_file() else None

    return replace(
        result,
        name=ablation.name,
        ablation=ablation,
        cached=cached,
        anchor_logits_path=existing(result.anchor_logits),
        weights_path=existing(result.weights),
    )


def _build_model(
    ablation: Ablation, preset: training.Preset, num_classes: int, trunk: AblationResult | None
) -> RetinaNet | None:
    """The model to train when ``train()`` cannot build it itself (OHEM, or a pretrained trunk);
    None otherwise."""
    if trunk is not None and trunk.weights_path is None:
        raise ValueError(
            f"{ablation.name}: its trunk run {ablation.trunk.name!r} diverged at step "
            f"{trunk.diverged_at}: there are no weights to start from"
        )
    if ablation.loss != "ohem" and trunk is None:
        return None
    torch.manual_seed(preset.seed)  # as train() does before it builds a model
    cls = OHEMRetinaNet if ablation.loss == "ohem" else RetinaNet
    model = cls(config=preset.model_config(num_classes))
    if trunk is not None:
        state = torch.load(trunk.weights_path, map_location="cpu", weights_only=True)
        load_trunk(model, state, freeze=ablation.freeze_trunk)
    return model


class _Training(NamedTuple):
    """A training run that may have diverged."""

    trained: training.TrainResult | None  # None: it diverged
    history: dict[str, list[float]]  # {"loss", "classification", "bbox_regression", "lr"}: one value per step
    diverged_at: int | None  # the step whose loss was NaN/inf
    seconds: float

    def result_fields(self) -> dict[str, Any]:
        """The fields of the run's :class:`AblationResult` that training fills."""
        return {
            "history": self.history,
            "steps": len(self.history["loss"]),
            "diverged_at": self.diverged_at,
            "train_seconds": self.seconds,
        }


def _train_or_diverge(
    preset: training.Preset, data: Dataset, device: torch.device, progress: bool, model: RetinaNet | None
) -> _Training:
    """Train; a loss that turns NaN/inf ends the run but keeps its history."""
    live: dict[str, Any] = {}

    def keep_history(event: str, h: dict) -> None:
        live["history"] = h  # the dict train() fills: still ours when it raises

    start = time.perf_counter()
    trained, diverged_at = None, None
    try:
        trained = training.train(preset, data, device=device, progress=progress, callbacks=[keep_history], model=model)
        steps = trained.history["train"]
    except training.TrainingDiverged:
        steps = live.get("history", {}).get("train", [])
        diverged_at = len(steps) + 1
    history = {k: [r[k] for r in steps] for k in ("loss", "classification", "bbox_regression", "lr")}
    return _Training(trained, history, diverged_at, time.perf_counter() - start)


class _Evaluation(NamedTuple):
    """What evaluating one run adds to its result, named as its fields (the defaults: no evaluation)."""

    metrics: dict[str, float] | None = None
    per_class: dict[str, float] | None = None
    num_positive: int | None = None
    num_negative: int | None = None
    num_negative_sampled: int | None = None
    eval_seconds: float = 0.0


def _evaluate_run(
    model: RetinaNet, ablation: Ablation, val_data: Dataset, device: torch.device, logits_path: Path
) -> _Evaluation:
    """mAP on the first ``ablation.val_images`` val images; the Figure-4 logits go to ``logits_path``."""
    start = time.perf_counter()
    val = Subset(val_data, range(_num_val_images(ablation, val_data)))
    evaluation, logits = evaluate_with_anchor_logits(model, val, device=device, seed=ablation.seed)
    save_torch_atomic(logits_path, logits)
    return _Evaluation(
        evaluation.as_dict(),
        evaluation.per_class,
        num_positive=len(logits["positive"]),
        num_negative=int(logits["negative_total"]),
        num_negative_sampled=len(logits["negative"]),
        eval_seconds=time.perf_counter() - start,
    )


def _save_weights(model: RetinaNet, cache_dir: Path, name: str) -> str:
    """Save ``model``'s state dict (on the CPU) as ``cache_dir/name``, atomically; returns ``name``."""
    save_torch_atomic(cache_dir / name, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return name


def _num_val_images(ablation: Ablation, val_data: Dataset | None) -> int | None:
    if val_data is None:
        return None
    return len(val_data) if ablation.val_images is None else min(ablation.val_images, len(val_data))


def load_trunk(model: RetinaNet, state: dict[str, Tensor], freeze: bool = True) -> RetinaNet:
    """Copy the backbone and FPN weights of ``state`` (a RetinaNet state dict) into ``model``;
    with ``freeze``, they get no gradient (and a frozen-BN backbone no statistics updates)."""
    trunk = {k: v for k, v in state.items() if k.startswith(TRUNK_PREFIXES)}
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    missing = [k for k in missing if k.startswith(TRUNK_PREFIXES)]
    if missing or unexpected:
        raise ValueError(f"the trunk weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if freeze:
        for name, p in model.named_parameters():
            if name.startswith(TRUNK_PREFIXES):
                p.requires_grad_(False)
    return model


class _Subset(Subset):
    """A ``Subset`` that keeps the class names (``train`` needs ``.classes``)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        super().__init__(dataset, list(indices))
        self.classes = list(dataset.classes)


def _environment(device: torch.device) -> dict[str, Any]:
    """Where, when and with what a run ran: ``device``, ``threads``, ``date`` and ``versions``."""
    import torchvision

    from .. import __version__

    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "retina_edu": __version__,
        },
    }
