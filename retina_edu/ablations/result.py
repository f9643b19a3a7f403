"""The result of one ablation run: what :func:`~retina_edu.ablations.run_ablation` returns and caches as JSON."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from .config import CACHE_VERSION, Ablation

__all__ = ["AblationResult", "load_anchor_logits"]


@dataclass
class AblationResult:
    """What :func:`run_ablation` returns and caches (as :meth:`to_json`, in ``<key>.json``).

    Read it by attribute (``result.metrics["AP"]``) or, as the JSON form and older code do, by key
    (``result["metrics"]["AP"]``; ``result["ablation"]`` is then the ablation's dict). ``metrics``
    are fractions ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}``; ``history`` has one value per
    step for ``"loss"``, ``"classification"``, ``"bbox_regression"`` and ``"lr"``.
    """

    key: str  # the cache key (ablation_key)
    name: str  # of the ablation that asked for it: a cached run answers to any name
    ablation: Ablation
    preset: dict[str, Any]  # the Preset trained with (Preset.to_dict())
    num_train_images: int
    num_val_images: int | None  # None: no val data
    metrics: dict[str, float] | None  # None: not evaluated (no val data, or it diverged)
    per_class: dict[str, float] | None  # AP per class name
    history: dict[str, list[float]]
    steps: int  # steps done
    diverged_at: int | None  # the step whose loss was NaN/inf
    train_seconds: float
    eval_seconds: float
    device: str
    threads: int
    date: str  # UTC, ISO 8601
    versions: dict[str, str]  # python, torch, torchvision, retina_edu
    anchor_logits: str | None = None  # file names in the cache folder
    weights: str | None = None
    trunk_key: str | None = None  # the trunk run's key and metrics, when it had one
    trunk_metrics: dict[str, float] | None = None
    num_positive: int | None = None  # anchors on the val images (Figure 4)
    num_negative: int | None = None
    num_negative_sampled: int | None = None
    cache_version: int = CACHE_VERSION
    # Not saved: whether it came from the cache, and the full paths of the files that exist.
    cached: bool = False
    anchor_logits_path: str | None = None
    weights_path: str | None = None

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to the cache: every field but ``cached`` and the two paths, plus ``seconds``."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_SAVED}
        return {**data, "ablation": self.ablation.to_dict(), "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AblationResult:
        """Read :meth:`to_json`'s form; also the dict results of earlier versions (the same keys)."""
        known = {f.name for f in fields(cls)} - _NOT_SAVED
        missing = sorted({f.name for f in fields(cls) if f.default is MISSING} - set(data))
        if missing:
            raise ValueError(f"an ablation result needs the keys {missing} (it has {sorted(data)})")
        kwargs = {k: v for k, v in data.items() if k in known}  # "seconds" is derived
        return cls(**{**kwargs, "ablation": Ablation(**data["ablation"])})

    def __getitem__(self, key: str) -> Any:
        """``result["metrics"]``: the JSON form's keys (``KeyError`` for any other)."""
        if key == "ablation":
            return self.ablation.to_dict()
        if key == "seconds" or key in _FIELD_NAMES:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


_NOT_SAVED = {"cached", "anchor_logits_path", "weights_path"}
_FIELD_NAMES = {f.name for f in fields(AblationResult)}


def load_anchor_logits(result: AblationResult | dict[str, Any]) -> dict[str, Tensor]:
    """The Figure-4 logits a result of :func:`run_ablation` saved beside its JSON."""
    path = result.get("anchor_logits_path")
    if not path:
        raise ValueError(f"{result.get('name')}: this run has no anchor logits (it diverged, or had no val data)")
    return torch.load(path, map_location="cpu", weights_only=True)
