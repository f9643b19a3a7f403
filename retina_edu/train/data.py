"""The training data as the loop reads it: a sampler that decides the order and the flips (so a resumed run
sees the same batches), the view of the dataset that applies them, the collate function, and the check for
non-finite images.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler


# ---------------------------------------------------------------------------------------------
# Data: a sampler that decides the order and the flips, so a resumed run sees the same batches
# ---------------------------------------------------------------------------------------------
class _EpochSampler(Sampler):
    """Yields ``(index, flip)`` for one epoch: the order from a ``DistributedSampler`` (shuffled by
    seed and epoch, split across processes), the flips from a generator seeded the same way.
    ``start`` skips the samples a resumed run has already seen this epoch."""

    def __init__(self, dataset: Dataset, rank: int, world: int, seed: int, hflip: bool):
        self.base = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.n, self.seed, self.hflip, self.start = len(dataset), seed, hflip, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.base) - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        flips = (torch.rand(self.n, generator=g) < 0.5) if self.hflip else torch.zeros(self.n, dtype=torch.bool)
        for i, index in enumerate(self.base):
            if i >= self.start:
                yield (index, bool(flips[index]))


class _TrainView(Dataset):
    """``dataset[(index, flip)]``: the image and target, flipped horizontally when asked."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool]):
        index, flip = key
        image, target = self.dataset[index]
        if flip:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = target["boxes"]
            flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            target = dict(target, boxes=flipped)
        return image, target, index


def _collate(batch):
    """``(images, targets, dataset indices)``: images stacked when they share a size."""
    images = [b[0] for b in batch]
    targets = [{"boxes": b[1]["boxes"], "labels": b[1]["labels"]} for b in batch]
    indices = [b[2] for b in batch]
    if len({tuple(im.shape) for im in images}) == 1:
        return torch.stack(images), targets, indices
    return images, targets, indices


def _non_finite_images(images: Tensor | list[Tensor], indices: list[int]) -> list[int]:
    """The dataset indices of the images in a batch that hold a NaN or infinite pixel."""
    return sorted(i for image, i in zip(images, indices, strict=True) if not bool(torch.isfinite(image).all()))
