"""The first line of every notebook (notebooks 00-10): seeds, print precision, compact figures."""

from __future__ import annotations

import numpy as np


def setup_notebook(seed: int = 0, dpi: int = 80) -> None:
    """Seed ``random``, numpy and torch with ``seed``; print 3 decimals; draw compact inline figures.

    Args:
        seed: the seed of all three generators.
        dpi: figure resolution (80 keeps the saved notebooks small).
    """
    import random

    import matplotlib.pyplot as plt
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=3, sci_mode=False)
    np.set_printoptions(precision=3, suppress=True)
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (6, 3.5), "axes.grid": False})
