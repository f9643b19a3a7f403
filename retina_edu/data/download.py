"""Downloading small real datasets, safely: checksums, no half-written files, safe extraction.

The course itself needs no download (it trains on the generated shapes data). To try a real
dataset, Penn-Fudan pedestrians (170 images, the one torchvision's detection tutorial uses)::

    from retina_edu.data import download_dataset, CocoDetection
    root = download_dataset("pennfudan", "data")           # data/PennFudanPed/annotations.json
    dataset = CocoDetection(root / "PNGImages", root / "annotations.json")

* :func:`download_file` streams to a temporary file beside the destination, checks SHA-256 and only
  then renames it into place; a mismatch or an interruption leaves nothing behind.
* :func:`extract_archive` refuses archive members that would land outside the destination
  ("zip slip"), any link, and device files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import file_sha256, write_atomic, write_json_atomic

_CHUNK = 1 << 20
_OFFLINE_HINT = "The course works offline with the generated shapes data: python -m retina_edu shapes --out data/shapes"


def download_file(
    url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest``, verifying its SHA-256.

    The data is streamed into a temporary file beside ``dest`` and renamed into place only when it is
    complete and its checksum matches. If ``dest`` already exists with the right checksum (or any
    content when ``sha256`` is None) nothing is downloaded.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: destination file; its folder is created if needed.
        sha256: expected SHA-256 (hex); ``None`` skips the check.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server.

    Returns:
        ``dest`` as a Path.

    Raises:
        ConnectionError: the download failed (no network, HTTP error); the message names the URL.
        ValueError: the checksum does not match (names the URL, the expected and the actual hash).
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256.lower()):
        return dest

    def fetch(tmp: Path) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "retina-edu"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConnectionError(f"download failed: {url} ({reason}). {_OFFLINE_HINT}") from e
        from tqdm.auto import tqdm

        hasher = hashlib.sha256()
        with response, open(tmp, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except OSError as e:
                        raise ConnectionError(f"download failed: {url} (connection lost: {e}). {_OFFLINE_HINT}") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
        actual = hasher.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise ValueError(
                f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {actual}; the download was deleted"
            )

    # write_atomic streams into a temporary beside dest and renames it only when fetch returns:
    # a checksum mismatch, a lost connection or Ctrl-C leaves nothing behind.
    return write_atomic(dest, fetch)


def _check_inside(archive: Path, dest: Path, member: str) -> None:
    target = (dest / member).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise ValueError(f"{archive}: member {member!r} would be extracted outside {dest}; refusing to extract")


def _refuse_link(archive: Path, member: str, target: str | None = None) -> None:
    # Links are refused whatever they point to: a chain of links that each look harmless can reach
    # outside the folder (a -> ., b -> a/..), and the datasets we extract contain none.
    to = f" (to {target!r})" if target is not None else ""
    raise ValueError(
        f"{archive}: member {member!r} is a link{to}; archives with links are refused, "
        f"extract it yourself if you trust it"
    )


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a .zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz archive into ``dest``.

    Every member is checked before anything is written: a member that would land outside ``dest``
    ("../x", "/etc/x"), any link (symbolic or hard, wherever it points) or a device file makes the
    whole archive rejected.

    Args:
        path: the archive.
        dest: destination folder (created if needed).

    Returns:
        ``dest`` as a Path.

    Raises:
        ValueError: unsupported archive type, or an unsafe member (named): outside ``dest``, a link
            or a special file.
    """
    path, dest = Path(path), Path(dest)
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _check_inside(path, dest, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):  # a Unix symlink stored by `zip --symlinks`
                    _refuse_link(path, info.filename)
            dest.mkdir(parents=True, exist_ok=True)
            zf.extractall(dest)
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        with tarfile.open(path) as tf:
            members = tf.getmembers()
            for m in members:
                _check_inside(path, dest, m.name)
                if m.issym() or m.islnk():
                    _refuse_link(path, m.name, m.linkname)
                if not (m.isfile() or m.isdir()):
                    raise ValueError(f"{path}: member {m.name!r} is a special file; refusing to extract")
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own safety net as well
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; members were checked above
                tf.extractall(dest, members=members)
    else:
        raise ValueError(f"{path}: unsupported archive type (expected .zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz)")
    return dest


def pennfudan_to_coco(root: str | os.PathLike) -> Path:
    """Write ``root/annotations.json`` (COCO) for an extracted Penn-Fudan folder.

    Penn-Fudan has ``PNGImages/<name>.png`` and instance masks ``PedMasks/<name>_mask.png`` in which
    pixel value k > 0 marks pedestrian k. Each instance becomes a box tight around its mask pixels
    (``[x, y, w, h]`` with pixel edges, so a one-pixel instance is 1 x 1), with ``area`` = the
    number of mask pixels (COCO's area is the segment's). One category: ``pedestrian`` (id 1).
    Image ids are 0, 1, ... in sorted file order; ``file_name`` is relative to ``root/PNGImages``.

    Args:
        root: the ``PennFudanPed`` folder.

    Returns:
        The path of the annotation file.

    Raises:
        FileNotFoundError: ``PNGImages``, ``PedMasks`` or an image's mask is missing.
        ValueError: a mask's size differs from its image's.
    """
    root = Path(root)
    image_dir, mask_dir = root / "PNGImages", root / "PedMasks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder not found (is {root} an extracted PennFudanPed?)")
    images, annotations = [], []
    for image_id, image_path in enumerate(sorted(image_dir.glob("*.png"))):
        mask, width, height = _pennfudan_mask(image_path, mask_dir / f"{image_path.stem}_mask.png")
        images.append({"id": image_id, "file_name": image_path.name, "width": width, "height": height})
        for instance in np.unique(mask):
            if instance == 0:
                continue
            ys, xs = np.nonzero(mask == instance)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            box = {"bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(xs.size), "iscrowd": 0}
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, **box})
    data = {
        "info": {
            "description": "Penn-Fudan pedestrians, boxes from instance masks",
            "generator": "retina_edu.data.pennfudan_to_coco",
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "pedestrian", "supercategory": "person"}],
    }
    return write_json_atomic(root / "annotations.json", data)


def _pennfudan_mask(image_path: Path, mask_path: Path) -> tuple[np.ndarray, int, int]:
    """The instance mask of a Penn-Fudan image (one channel), and the image's width and height."""
    if not mask_path.is_file():
        raise FileNotFoundError(f"{mask_path}: mask of {image_path} not found")
    with Image.open(image_path) as im:
        width, height = im.size
    with Image.open(mask_path) as m:
        mask = np.array(m)
    if mask.shape[:2] != (height, width):
        raise ValueError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_path} is {width}x{height}")
    return (mask[..., 0] if mask.ndim == 3 else mask), width, height


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset that :func:`download_dataset` knows how to fetch.

    Attributes:
        url: where the archive lives.
        sha256: its SHA-256, or None when not pinned (then the hash is printed after download).
        folder: the folder the archive extracts to.
        images: the image folder inside ``folder`` (for :class:`CocoDetection`).
        convert: turns the extracted folder into a COCO ``annotations.json``; returns its path.
        description: one line for humans.
    """

    url: str
    sha256: str | None
    folder: str
    images: str
    convert: Callable[[Path], Path] | None
    description: str


DATASETS: dict[str, RemoteDataset] = {
    "pennfudan": RemoteDataset(
        url="https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
        # Not pinned: neither the dataset's page nor torchvision's tutorial publishes a hash, and an
        # invented one would be worse than none. download_dataset prints the hash it got so that it
        # can be pinned here once checked.
        sha256=None,
        folder="PennFudanPed",
        images="PNGImages",
        convert=pennfudan_to_coco,
        description="Penn-Fudan pedestrians: 170 images, 345 pedestrians with instance masks (~53 MB)",
    ),
}


def download_dataset(name: str, root: str | os.PathLike = "data", progress: bool = True) -> Path:
    """Download, extract and convert a dataset from :data:`DATASETS`; return its folder.

    Steps already done (archive downloaded, folder extracted) are skipped on a second call.

    Args:
        name: a key of :data:`DATASETS`.
        root: where the archive and the extracted folder go.
        progress: show a progress bar and print what happens.

    Returns:
        ``root / folder``, holding ``annotations.json`` and the images (``DATASETS[name].images``).

    Raises:
        ValueError: unknown name, or checksum mismatch.
        ConnectionError: the download failed (the course works offline with the shapes data).
    """
    if name not in DATASETS:
        raise ValueError(f"download_dataset: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    root = Path(root)
    folder = root / spec.folder
    if not folder.is_dir():
        archive = download_file(spec.url, root / spec.url.rsplit("/", 1)[-1], sha256=spec.sha256, progress=progress)
        if spec.sha256 is None and progress:
            print(f"{archive.name}: sha256 {file_sha256(archive)} (not pinned in DATASETS)")
        tmp = root / f".{spec.folder}.extract-{os.getpid()}"
        try:
            extract_archive(archive, tmp)
            extracted = tmp / spec.folder if (tmp / spec.folder).is_dir() else tmp
            os.replace(extracted, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if spec.convert is not None and not (folder / "annotations.json").is_file():
        spec.convert(folder)
    return folder
