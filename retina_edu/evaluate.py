"""COCO mAP with pycocotools (notebook 09).

COCO's AP averages precision over recall levels 0, 0.01, ..., 1 and over IoU thresholds
0.50, 0.55, ..., 0.95 ("AP@[.5:.95]"), then over classes. AP50 and AP75 fix the IoU threshold;
APs, APm, APl restrict to small (< 32² px), medium and large (> 96² px) objects. We never
compute it ourselves: ``pycocotools.cocoeval.COCOeval`` is the reference every paper uses.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .boxes import box_xyxy_to_xywh
from .device import eval_mode

__all__ = ["EvalResult", "coco_map", "coco_map_from_predictions", "predict"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class EvalResult:
    """COCO metrics (fractions in [0, 1]; -1 where a size has no objects) and per-class AP.

    ``precision`` is COCOeval's array ``[T=10 IoUs, R=101 recalls, K classes, 4 areas, 3 maxDets]``.
    """

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    per_class: dict[str, float] = field(default_factory=dict)
    precision: np.ndarray | None = field(default=None, repr=False)
    class_names: list[str] = field(default_factory=list, repr=False)
    summary: str = field(default="", repr=False)

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def pr_curve(self, label: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(recall, precision)`` of one class at one IoU threshold (all areas, 100 detections).

        Precision is COCO's interpolated (monotone) precision at recalls 0, 0.01, ..., 1; it is
        0 beyond the highest recall the detector reaches.
        """
        if self.precision is None:
            raise ValueError("no precision array: the evaluation had no detections")
        t = int(round((iou - 0.5) / 0.05))
        if not 0 <= t < self.precision.shape[0] or abs(0.5 + 0.05 * t - iou) > 1e-6:
            raise ValueError(f"iou must be one of 0.50, 0.55, ..., 0.95, got {iou}")
        recall = np.linspace(0, 1, self.precision.shape[1])
        precision = self.precision[t, :, label, 0, -1].clip(min=0)
        return recall, precision

    def __str__(self) -> str:
        head = "  ".join(f"{n:>6}" for n in METRIC_NAMES)
        vals = "  ".join(f"{getattr(self, n):6.3f}" for n in METRIC_NAMES)
        lines = [head, vals]
        if self.per_class:
            width = max(len(c) for c in self.per_class)
            lines += [f"  {c:<{width}}  AP {ap:.3f}" for c, ap in self.per_class.items()]
        return "\n".join(lines)


def _images_only_collate(batch):
    images = [b[0] for b in batch]
    # image ids stay as the dataset gives them (COCO files may use strings); tensors become numbers.
    ids = [b[1]["image_id"].item() if isinstance(b[1]["image_id"], Tensor) else b[1]["image_id"] for b in batch]
    return images, ids


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[list[Any], list[dict[str, Tensor]]]:
    """Run ``model`` (in eval mode) over a dataset.

    Returns:
        ``(image_ids, detections)``: the targets' ``image_id`` and one detection dict per image, on the CPU.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_images_only_collate
    )
    ids, detections = [], []
    with eval_mode(model):
        for images, image_ids in tqdm(loader, desc="detect", disable=not progress, leave=False):
            same = len({tuple(im.shape) for im in images}) == 1
            batch = torch.stack(images).to(device) if same else [im.to(device) for im in images]
            for det in model(batch):
                detections.append({k: v.cpu() for k, v in det.items()})
            ids.extend(image_ids)
    return ids, detections


def _dataset_parts(dataset: Dataset):
    """The underlying dataset (through ``Subset``s) and the indices used."""
    indices = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in (indices if indices is not None else range(len(dataset)))]
        dataset = dataset.dataset
    return dataset, indices


def coco_map_from_predictions(
    image_ids: Sequence[Any],
    detections: Sequence[dict[str, Tensor]],
    dataset: Dataset,
) -> EvalResult:
    """Score detections against a dataset's ground truth with pycocotools' ``COCOeval``.

    The ground truth is the dataset's :meth:`~retina_edu.data.DetectionDataset.coco_api`: the same
    validated, clipped boxes its targets hold, so its own targets scored as detections give AP 1.0.
    Only the images in ``image_ids`` are scored (a ``Subset`` scores its own images).

    Args:
        image_ids: the ``image_id`` of each detection dict (as in the dataset's targets).
        detections: ``{"boxes" xyxy in the image's pixels, "scores", "labels"}`` per image.
        dataset: a ``CocoDetection`` or ``VOCDetection`` (or a ``Subset`` of one): it provides
            ``coco_api()``, ``label_to_category_id`` and ``classes``.
    """
    base, _ = _dataset_parts(dataset)
    for attr in ("coco_api", "label_to_category_id", "classes"):
        if not hasattr(base, attr):
            raise ValueError(f"{type(base).__name__} has no {attr!r}: use a CocoDetection or VOCDetection")
    coco_gt = base.coco_api()
    results, coco_ids, to_cat = _coco_results(base, image_ids, detections)
    class_names = list(base.classes)
    if not results:  # pycocotools cannot load an empty result list
        return EvalResult(
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, {c: 0.0 for c in class_names}, None, class_names, "no detections"
        )
    cat_ids = [to_cat[label] for label in range(len(class_names))]
    return _cocoeval(coco_gt, results, sorted(set(coco_ids)), cat_ids, class_names)


def _coco_results(
    base: Dataset, image_ids: Sequence[Any], detections: Sequence[dict[str, Tensor]]
) -> tuple[list[dict[str, Any]], list[int], dict[int, int]]:
    """``(one COCO result dict per box, the index's image id of each image, {label: category id})``."""
    # The readers map their ids to the index's integer ids; other datasets with a coco_api use theirs.
    if hasattr(base, "coco_image_ids"):
        coco_ids = base.coco_image_ids(list(image_ids))
    else:
        coco_ids = [int(i) for i in image_ids]
    if hasattr(base, "coco_category_id"):
        to_cat = {label: base.coco_category_id(label) for label in range(len(base.classes))}
    else:
        to_cat = {label: int(cid) for label, cid in base.label_to_category_id.items()}
    results = []
    for image_id, det in zip(coco_ids, detections):
        boxes = box_xyxy_to_xywh(det["boxes"].float()).tolist()
        for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist()):
            results.append(
                {"image_id": image_id, "category_id": to_cat[int(label)], "bbox": box, "score": float(score)}
            )
    return results, coco_ids, to_cat


def _cocoeval(
    coco_gt, results: list[dict[str, Any]], img_ids: list[int], cat_ids: list[int], class_names
) -> EvalResult:
    """pycocotools' ``COCOeval`` of ``results`` on ``img_ids`` (its printout kept as the summary)."""
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = img_ids
        ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats[:6]]
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name] = float(p.mean()) if p.size else -1.0
    summary = "\n".join(line for line in out.getvalue().splitlines() if "Average" in line)
    return EvalResult(*stats, per_class=per_class, precision=precision, class_names=class_names, summary=summary)


def coco_map(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Detect on every image of ``dataset`` and return COCO's AP, AP50, AP75, APs, APm, APl and per-class AP.

    The dataset should return images in their original pixels (no resizing transform): the
    model resizes internally and maps its boxes back, so they are compared with the
    annotation file's boxes as they are.
    """
    image_ids, detections = predict(model, dataset, batch_size, device, num_workers, progress)
    return coco_map_from_predictions(image_ids, detections, dataset)
