"""retina_edu.postprocess against a slow per-image reference (torchvision's loop)."""

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from retina_edu.anchors import anchors_per_level
from retina_edu.postprocess import postprocess_detections


def reference(cls_logits, box_deltas, levels, image_sizes, score_thresh=0.05, topk=1000, nms=0.5, keep=100):
    """Per image, per level, as torchvision's RetinaNet.postprocess_detections."""
    coder = TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    sizes = [a.shape[0] for a in levels]
    out = []
    for logits, deltas, size in zip(cls_logits, box_deltas, image_sizes):
        boxes_all, scores_all, labels_all = [], [], []
        for lg, dl, anc in zip(logits.split(sizes), deltas.split(sizes), levels):
            k = lg.shape[1]
            scores = torch.sigmoid(lg).flatten()
            keep_idx = scores > score_thresh
            scores = scores[keep_idx]
            idx = torch.where(keep_idx)[0]
            scores, order = scores.topk(min(topk, idx.numel()))
            idx = idx[order]
            anchor_idx, labels = idx // k, idx % k
            boxes = torchvision.ops.clip_boxes_to_image(coder.decode_single(dl[anchor_idx], anc[anchor_idx]), size)
            boxes_all.append(boxes), scores_all.append(scores), labels_all.append(labels)
        boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        kept = torchvision.ops.batched_nms(boxes, scores, labels, nms)[:keep]
        out.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
    return out


def head_outputs(batch, size, num_classes, seed, bias=-3.0):
    g = torch.Generator().manual_seed(seed)
    levels = anchors_per_level(size)
    total = sum(a.shape[0] for a in levels)
    cls_logits = torch.randn(batch, total, num_classes, generator=g) + bias
    box_deltas = torch.randn(batch, total, 4, generator=g) * 0.2
    return cls_logits, box_deltas, levels


def assert_same_detections(ours, ref):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a["boxes"].shape == b["boxes"].shape, f"image {i}"
        torch.testing.assert_close(a["scores"], b["scores"])
        torch.testing.assert_close(a["boxes"], b["boxes"])
        assert torch.equal(a["labels"], b["labels"]), f"image {i}"


@pytest.mark.parametrize("batch,num_classes,bias", [(1, 3, -3.0), (4, 5, -3.0), (3, 2, -1.0), (2, 4, -8.0)])
def test_batched_postprocess_equals_per_image_reference(batch, num_classes, bias):
    size = (128, 160)
    cls_logits, box_deltas, levels = head_outputs(batch, size, num_classes, seed=batch, bias=bias)
    anchors = torch.cat(levels)
    image_sizes = [(128, 160), (100, 150), (128, 90), (64, 64)][:batch]
    ours = postprocess_detections(cls_logits, box_deltas, anchors, [a.shape[0] for a in levels], image_sizes)
    assert_same_detections(ours, reference(cls_logits, box_deltas, levels, image_sizes))


def test_topk_and_detections_per_image_limits():
    cls_logits, box_deltas, levels = head_outputs(2, (128, 128), 3, seed=9, bias=0.0)
    anchors, counts = torch.cat(levels), [a.shape[0] for a in levels]
    ours = postprocess_detections(
        cls_logits, box_deltas, anchors, counts, [(128, 128)] * 2, topk_candidates=50, detections_per_img=7
    )
    assert [len(d["boxes"]) for d in ours] == [7, 7]
    assert_same_detections(ours, reference(cls_logits, box_deltas, levels, [(128, 128)] * 2, topk=50, keep=7))


def test_nothing_above_threshold_gives_empty_tensors_of_the_right_shape():
    cls_logits, box_deltas, levels = head_outputs(2, (64, 64), 3, seed=1, bias=-20.0)
    out = postprocess_detections(
        cls_logits, box_deltas, torch.cat(levels), [a.shape[0] for a in levels], [(64, 64)] * 2
    )
    for d in out:
        assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) and d["labels"].shape == (0,)
        assert d["labels"].dtype == torch.int64


def test_detections_are_sorted_best_first_and_inside_the_image():
    cls_logits, box_deltas, levels = head_outputs(3, (96, 96), 4, seed=5, bias=-2.0)
    out = postprocess_detections(
        cls_logits, box_deltas * 5, torch.cat(levels), [a.shape[0] for a in levels], [(96, 96), (50, 70), (96, 40)]
    )
    for d, (h, w) in zip(out, [(96, 96), (50, 70), (96, 40)]):
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])
        assert d["boxes"][:, 0::2].max() <= w and d["boxes"][:, 1::2].max() <= h and d["boxes"].min() >= 0
