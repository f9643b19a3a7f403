"""Writing files so that nothing a user made is ever half-written.

Every file the package writes for the user (checkpoints, training histories, cached ablation
results, converted annotations, downloads) goes through :func:`write_atomic`: written to a temporary
file beside its destination, flushed to disk, then renamed into place. A rename within one folder is
atomic, so a reader sees the old file or the new one, never a part; a crash or Ctrl-C leaves the old
file as it was and no temporary behind. A process killed outright (``kill -9``, power loss) cannot
clean up after itself: its temporary is removed by the next write to the same destination.
Folders built in one piece (a generated dataset) go through :func:`replace_folder_atomic` the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "replace_folder_atomic", "save_torch_atomic", "write_atomic", "write_json_atomic"]

_CHUNK = 1 << 20


def _temporary(path: Path, kind: str) -> Path:
    """The hidden sibling ``.<name>.<kind>-<pid>`` that this process writes ``path`` through."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _process_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: leave its file alone
    return True


def _remove_stale_temporaries(path: Path, kinds: tuple[str, ...]) -> None:
    """Remove ``.<name>.<kind>-<pid>`` siblings of ``path`` left by processes that no longer run.

    Only this module's own naming pattern, beside this destination, is touched; a temporary of a
    process still running (a concurrent write) is left alone.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:{'|'.join(kinds)})-(\d+)")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if match is None or _process_is_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                sibling.unlink()


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; a no-op where the OS cannot (Windows folders)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDWR
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, flush it to disk, then rename it to ``path``.

    Args:
        path: the destination; its folder is created if needed.
        write: writes the whole file to the path it is given (e.g. ``lambda tmp: torch.save(obj, tmp)``).

    Returns:
        ``path`` as a Path.

    Raises:
        Whatever ``write`` raises; the destination is then left as it was and the temporary removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path, ("tmp",))
    tmp = _temporary(path, "tmp")
    try:
        write(tmp)
        # Without the fsync a crash soon after the rename can leave an empty file under the new name
        # (the rename reached the disk before the data did): the old file would be lost too.
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
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


def replace_folder_atomic(path: str | Path, build: Callable[[Path], Any]) -> Path:
    """Call ``build(tmp)`` on an empty temporary folder beside ``path``, then swap it in as ``path``.

    An existing ``path`` is moved aside first and deleted only once the new folder is in place; if
    anything fails (or Ctrl-C), the temporary folder is removed and ``path`` is left as it was.

    Args:
        path: the folder to create or replace; its parent is created if needed.
        build: fills the folder it is given.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path, ("tmp", "old"))
    tmp, old = _temporary(path, "tmp"), _temporary(path, "old")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        build(tmp)
        if path.exists():
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the user's data back
                raise
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file as lowercase hex (read in 1 MiB chunks, so any size fits in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
