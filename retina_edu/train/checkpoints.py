"""Checkpoints and the run folder: ``check_output_folder`` (``OutputError``), atomic ``save_checkpoint``,
``load_checkpoint`` (``weights_only=True``: opening one runs no code), ``find_checkpoint``, ``load_model``,
the random generators' state (a resumed run continues them), and ``data_fingerprint`` (a resumed run
checks it trains on the same images).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..files import write_atomic
from ..model import RetinaNet, RetinaNetConfig

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "retina-edu-checkpoint-v1"
HISTORY_NAME = "history.json"


def data_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a training set: ``{"num_images": N, "sha256": hex}``.

    The hash covers each image's file name, boxes and labels, in dataset order (read from the
    annotations, not the pixels, so it takes a moment even for COCO). A checkpoint records it, and
    resuming on other data with the same class names is refused. Datasets without
    ``image_path``/``get_target`` (e.g. your own) are identified by their size only.
    """
    base, indices = dataset, range(len(dataset))
    if isinstance(dataset, Subset):
        base, indices = dataset.dataset, dataset.indices
    fingerprint: dict[str, Any] = {"num_images": len(dataset)}
    if hasattr(base, "image_path") and hasattr(base, "get_target"):
        h = hashlib.sha256()
        for i in indices:
            target = base.get_target(i)
            h.update(Path(base.image_path(i)).name.encode() + b"\0")
            h.update(np.asarray(target["boxes"], dtype=np.float32).tobytes())
            h.update(np.asarray(target["labels"], dtype=np.int64).tobytes())
        fingerprint["sha256"] = h.hexdigest()
    return fingerprint


# ---------------------------------------------------------------------------------------------
# Checkpoints and the run folder
# ---------------------------------------------------------------------------------------------
class OutputError(OSError):
    """A file of the run could not be written; the message names the path and the reason."""


def _unwrap(model: nn.Module) -> RetinaNet:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def check_output_folder(folder: str | Path) -> Path:
    """Make ``folder`` if needed and check that files can be written in it, before any training.

    Raises:
        OutputError: ``folder`` is a file, lies below a file, is read-only, ... (the message says which).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder: choose a folder for the run (out_dir / --out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(
            f"{folder}: cannot write the run there ({err.strerror or err}): choose another folder (out_dir / --out)"
        ) from err
    return folder


def _write(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(path)``, with a failure (disk full, permissions) said in one line naming the path."""
    try:
        write(path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def find_checkpoint(out_dir: str | Path | None) -> Path | None:
    """``out_dir/last.pt`` if a run left one there, else None (what ``resume=True`` continues)."""
    if out_dir is None:
        return None
    path = Path(out_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file beside ``path``, then rename it into
    place: a crash or Ctrl-C never leaves a half-written checkpoint, and the previous one stays.

    The state is serialised in memory first, so that a write that fails (a full disk) fails as an
    ``OSError`` with its reason instead of torch's "unexpected pos" message.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _legacy_numpy_globals() -> list[Any]:
    """What unpickling a numpy array needs: the RNG state of checkpoints written before the state was
    stored as tensors. Array construction only; it cannot call anything else."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``train``; clear errors for a missing, foreign or unsafe file.

    Opened with ``torch.load(weights_only=True)``: only tensors and plain data (numbers, strings,
    lists, dicts) are read. A file that holds other Python objects (which unpickling could run)
    is refused, and nothing in it runs.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (train with --out DIR writes DIR/{CHECKPOINT_NAME})")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err).lower():
            raise ValueError(
                f"{path}: refused: the file holds Python objects other than tensors and plain data, "
                f"which could run code when opened (nothing in it was run); only open "
                f"checkpoints written by retina-edu"
            ) from None
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({first_line})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a retina-edu checkpoint (no {CHECKPOINT_FORMAT!r} marker)")
    return state


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[RetinaNet, list[str]]:
    """The trained model of a checkpoint, in eval mode, and its class names."""
    state = load_checkpoint(path, map_location=device)
    model = RetinaNet(config=RetinaNetConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), list(state["classes"])


def _rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain lists (``weights_only`` can read them)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].cpu().numpy().astype(np.uint32)
        numpy_state = ("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple in checkpoints written before the states were tensors
    if isinstance(python_state, dict):
        python_state = (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _non_finite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding a NaN or infinite value."""
    return [
        name for name, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
