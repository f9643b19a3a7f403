"""Writing files so that nothing a user made is ever half-written.

Every file the package writes for the user (checkpoints, training histories, cached ablation
results, converted annotations) goes through :func:`write_atomic`: written to a temporary file
beside its destination, then renamed into place. A rename within one folder is atomic, so a
reader sees the old file or the new one, never a part; a crash or Ctrl-C leaves the old file
as it was and no temporary behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["save_torch_atomic", "write_atomic", "write_json_atomic"]


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_torch_atomic(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj, path)``, atomically."""
    import torch

    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(path: str | Path, data: Any, indent: int = 1) -> Path:
    """``data`` as JSON (NaN allowed), atomically."""
    text = json.dumps(data, indent=indent, allow_nan=True)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
