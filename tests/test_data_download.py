"""retina_edu.data.download: checksums, no half-written files, safe extraction, Penn-Fudan conversion."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_coco import _write_png  # a random PNG of a given size and mode (tests/ is on sys.path)
from torchvision.ops import masks_to_boxes

from retina_edu.data import (
    DATASETS,
    CocoDetection,
    download_dataset,
    download_file,
    extract_archive,
    pennfudan_to_coco,
)


def _load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture()
def http_dir(tmp_path: Path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base_url)."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_with_the_right_checksum_lands_in_place(tmp_path: Path, http_dir) -> None:
    www, base = http_dir
    payload = os.urandom(300_000)
    (www / "data.bin").write_bytes(payload)
    dest = download_file(
        f"{base}/data.bin", tmp_path / "dl" / "data.bin", sha256=hashlib.sha256(payload).hexdigest(), progress=False
    )
    assert dest.read_bytes() == payload
    assert sorted(os.listdir(dest.parent)) == ["data.bin"]
    (www / "data.bin").unlink()  # already there with the right hash: not downloaded again
    assert download_file(f"{base}/data.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False) == dest


def test_download_from_a_file_url(tmp_path: Path) -> None:
    source = tmp_path / "src.txt"
    source.write_bytes(b"hello")
    dest = download_file(
        source.as_uri(), tmp_path / "out" / "copy.txt", sha256=hashlib.sha256(b"hello").hexdigest(), progress=False
    )
    assert dest.read_bytes() == b"hello"


def test_download_with_a_bad_checksum_raises_and_leaves_nothing(tmp_path: Path, http_dir) -> None:
    www, base = http_dir
    (www / "data.bin").write_bytes(b"x" * 1000)
    dest_dir = tmp_path / "dl"
    url = f"{base}/data.bin"
    with pytest.raises(ValueError) as info:
        download_file(url, dest_dir / "data.bin", sha256="0" * 64, progress=False)
    message = str(info.value)
    assert url in message and "0" * 64 in message and hashlib.sha256(b"x" * 1000).hexdigest() in message
    assert os.listdir(dest_dir) == []


def test_download_failure_is_a_connection_error_pointing_to_the_offline_course(tmp_path: Path, http_dir) -> None:
    _, base = http_dir
    with pytest.raises(ConnectionError) as info:  # 404
        download_file(f"{base}/missing.zip", tmp_path / "m.zip", progress=False)
    assert f"{base}/missing.zip" in str(info.value) and "shapes" in str(info.value)
    with socket.socket() as s:  # a port that nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = f"http://127.0.0.1:{port}/nothing.zip"
    with pytest.raises(ConnectionError, match=f"download failed: {unreachable}"):
        download_file(unreachable, tmp_path / "n.zip", progress=False, timeout=5)
    assert sorted(os.listdir(tmp_path)) == ["www"]


def test_extract_archive_handles_zip_and_tar_gz(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("top/x.txt", "zip")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("top/y.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"tar"))
    assert (extract_archive(tmp_path / "a.zip", tmp_path / "out") / "top/x.txt").read_text() == "zip"
    assert (extract_archive(tmp_path / "a.tar.gz", tmp_path / "out") / "top/y.txt").read_text() == "tar"
    with pytest.raises(ValueError, match="unsupported archive"):
        extract_archive(tmp_path / "a.rar", tmp_path / "out")


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil-retina-edu.txt", "ok/../../evil.txt"])
def test_extract_archive_rejects_members_escaping_the_destination(tmp_path: Path, member: str) -> None:
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("fine.txt", "fine")
        zf.writestr(member, "evil")
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        info = tarfile.TarInfo(member)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    for archive in ("bad.zip", "bad.tar"):
        with pytest.raises(ValueError, match="outside"):
            extract_archive(tmp_path / archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest" / "fine.txt").exists()  # nothing extracted
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tf:
        for info in members:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


@pytest.mark.parametrize(
    "members, named",
    [
        ([_link("top/passwd", "../../../etc/passwd")], "top/passwd"),
        # each link alone stays inside; followed in a chain, b reaches the destination's parent
        ([_link("a", "."), _link("a/b", "..")], "'a'"),
        ([_file("top/real.txt"), _link("top/alias.txt", "real.txt")], "top/alias.txt"),
        ([_file("top/real.txt"), _link("top/hard.txt", "top/real.txt", tarfile.LNKTYPE)], "top/hard.txt"),
    ],
)
def test_extract_archive_refuses_any_link_member_naming_it_and_writes_nothing(tmp_path, members, named) -> None:
    archive = _tar_with(tmp_path / "link.tar", *members)
    with pytest.raises(ValueError, match="is a link") as info:
        extract_archive(archive, tmp_path / "dest")
    assert named in str(info.value) and str(archive) in str(info.value)
    assert not (tmp_path / "dest").exists()


def test_extract_archive_refuses_a_symlink_stored_in_a_zip(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("top/passwd")
        info.external_attr = 0o120777 << 16  # S_IFLNK | 0777, as `zip --symlinks` writes it
        zf.writestr(info, "../../../etc/passwd")
    with pytest.raises(ValueError, match="'top/passwd' is a link"):
        extract_archive(tmp_path / "link.zip", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_download_leaves_no_temporary_and_cleans_those_of_a_killed_download(tmp_path: Path, http_dir) -> None:
    www, base = http_dir
    (www / "data.bin").write_bytes(b"abc")
    dest = tmp_path / "dl" / "data.bin"
    dest.parent.mkdir()
    stale = dest.with_name(".data.bin.tmp-999999999")  # no process has this id: a killed download
    stale.write_bytes(b"half")
    download_file(f"{base}/data.bin", dest, sha256=hashlib.sha256(b"abc").hexdigest(), progress=False)
    assert sorted(os.listdir(dest.parent)) == ["data.bin"]


def _fake_pennfudan(root: Path) -> list[np.ndarray]:
    """Two images with instance masks (values 1..k), as in PennFudanPed/{PNGImages,PedMasks}."""
    masks = []
    for name, (h, w), instances in (
        ("FudanPed00001", (40, 50), [(2, 3, 10, 20), (20, 5, 45, 38)]),
        ("PennPed00002", (30, 20), [(0, 0, 20, 30)]),
    ):
        _write_png(root / "PNGImages" / f"{name}.png", w, h)
        mask = np.zeros((h, w), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(instances, start=1):
            mask[y1:y2, x1:x2] = k
            mask[y1, x1] = 0  # not a full rectangle: the box must come from the pixels
        (root / "PedMasks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").convert("P").save(root / "PedMasks" / f"{name}_mask.png")
        masks.append(mask)
    return masks


def test_pennfudan_masks_become_tight_coco_boxes(tmp_path: Path) -> None:
    root = tmp_path / "PennFudanPed"
    masks = _fake_pennfudan(root)
    ann_file = pennfudan_to_coco(root)
    dataset = CocoDetection(root / "PNGImages", ann_file)
    assert dataset.classes == ["pedestrian"] and len(dataset) == 2
    for index, mask in enumerate(masks):
        instances = torch.stack([torch.from_numpy(mask == k) for k in range(1, int(mask.max()) + 1)])
        # masks_to_boxes gives inclusive pixel indices; COCO boxes run to the far pixel edge (+1)
        expected = masks_to_boxes(instances) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        image, target = dataset[index]
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [0] * len(instances)
        assert image.shape[1:] == mask.shape
    areas = [a["area"] for a in _load_json(ann_file)["annotations"]]
    assert areas == [int((m == k).sum()) for m in masks for k in range(1, int(m.max()) + 1)]


def test_download_dataset_downloads_extracts_and_converts(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "source"
    _fake_pennfudan(source / "PennFudanPed")
    archive = tmp_path / "PennFudanPed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((source / "PennFudanPed").rglob("*.png")):
            zf.write(path, path.relative_to(source).as_posix())
    spec = DATASETS["pennfudan"]
    local = type(spec)(
        url=archive.as_uri(),
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        folder=spec.folder,
        images=spec.images,
        convert=spec.convert,
        description=spec.description,
    )
    monkeypatch.setitem(DATASETS, "pennfudan", local)
    folder = download_dataset("pennfudan", tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "PennFudanPed"
    dataset = CocoDetection(folder / local.images, folder / "annotations.json")
    assert len(dataset) == 2 and len(dataset.get_target(0)["boxes"]) == 2
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["PennFudanPed", "PennFudanPed.zip"]


def test_the_registry_points_at_the_real_pennfudan_archive() -> None:
    spec = DATASETS["pennfudan"]
    assert spec.url == "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
    with pytest.raises(ValueError, match="unknown dataset"):
        download_dataset("imagenet")


def test_the_registered_archive_has_a_pinned_checksum() -> None:
    spec = DATASETS["pennfudan"]
    if spec.sha256 is None:  # no published hash to pin it to, and no network here to compute one
        pytest.xfail("checksum not pinned")
    assert len(spec.sha256) == 64 and all(c in "0123456789abcdef" for c in spec.sha256)
