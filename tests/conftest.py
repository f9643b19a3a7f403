"""Shared pytest fixtures. Keep them small and generic: every module's tests may use them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Figures render off-screen in tests, whatever the shell sets (the Makefile sets it too).
os.environ.setdefault("MPLBACKEND", "agg")


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes dataset (24 images of 96 x 96, seed 0), made once per test session.

    Returns the folder holding ``annotations.json`` and ``images/``; read it with
    ``retina_edu.data.CocoDetection.from_folder(tiny_shapes)``. Treat it as read-only.
    """
    from retina_edu.data import make_shapes

    return make_shapes(
        tmp_path_factory.mktemp("shapes") / "tiny", num_images=24, image_size=96, seed=0, workers=1, progress=False
    )


@pytest.fixture
def scored_anchors():
    """Many easy negatives, a few hard ones, a handful of positives: the shape of a detector's batch.

    Returns ``(logits, targets)``: ``Tensor[20000]`` each, targets 0/1 (seed 0).
    """
    import torch

    g = torch.Generator().manual_seed(0)
    n = 20_000
    targets = (torch.rand(n, generator=g) < 0.005).float()
    hard = torch.rand(n, generator=g) < 0.03
    noise = torch.randn(n, generator=g)
    logits = torch.where(hard, -1.0 + 1.5 * noise, -5.0 + noise)
    logits = torch.where(targets > 0, 1.0 + 2.0 * noise, logits)
    return logits, targets


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test left open (pyplot keeps them alive otherwise)."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
