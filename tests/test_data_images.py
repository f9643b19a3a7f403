"""retina_edu.data.images: every PIL mode becomes RGB in [0, 1] as PIL would show it, or is refused by name."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import retina_edu.data.images as images_module
from retina_edu.data import image_header, load_image


def _rgb_reference(image: Image.Image) -> torch.Tensor:
    """PIL's own conversion to RGB, as a [3, H, W] tensor in [0, 1]."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255


def _random(shape: tuple[int, ...], high: int = 256, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, high, shape).astype(dtype)


def test_sixteen_bit_grayscale_is_scaled_not_saturated(tmp_path: Path) -> None:
    bits = 16
    values = _random((12, 10), high=2**bits, dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 2**bits - 1
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    expected = torch.from_numpy(values.astype(np.float64) / (2**bits - 1)).float()
    assert image.shape == (3, 12, 10)
    for channel in image:
        torch.testing.assert_close(channel, expected)
    assert 0.1 < float(image.mean()) < 0.9  # not all white, as convert("RGB") made it


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "1", "P", "CMYK"])
def test_eight_bit_modes_load_as_pils_rgb_conversion(tmp_path: Path, mode: str) -> None:
    channels = {"L": 1, "LA": 2, "RGBA": 4, "1": 1, "P": 1, "CMYK": 4}[mode]
    array = _random((9, 11, channels)).squeeze(-1) if channels == 1 else _random((9, 11, channels))
    base = Image.fromarray(array, mode={1: "L", 2: "LA", 4: "RGBA"}[channels])
    image = (
        base.convert(mode)
        if mode in ("1", "P")
        else (Image.frombytes("CMYK", base.size, base.tobytes()) if mode == "CMYK" else base)
    )
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path, **({"quality": 100} if mode == "CMYK" else {}))
    with Image.open(path) as reread:
        assert reread.mode == mode
        expected = _rgb_reference(reread)
    torch.testing.assert_close(load_image(path), expected)


def test_a_palette_with_transparency_loads_without_a_warning(tmp_path: Path) -> None:
    image = Image.fromarray(_random((6, 6))).convert("P")
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(tmp_path / "p.png")
    assert loaded.shape == (3, 6, 6)


def test_an_unsupported_mode_is_refused_by_name(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 0.5, dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    for read in (image_header, load_image):
        with pytest.raises(ValueError, match=r"f\.tiff: image mode 'F' is not supported"):
            read(tmp_path / "f.tiff")


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(_random((30, 40))).save(tmp_path / "big.png")
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 1000)
    for read in (image_header, load_image):
        with pytest.raises(ValueError, match=r"big\.png: 40x30 pixels is more than MAX_IMAGE_PIXELS=1,000"):
            read(tmp_path / "big.png")


def test_the_default_limit_refuses_what_pil_only_warns_about(tmp_path: Path) -> None:
    # 12,000 x 12,000 = 144 MP: PIL warns (over 89 MP) but opens it; a 1-bit PNG of it is a few KB.
    Image.new("1", (12_000, 12_000)).save(tmp_path / "bomb.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and PIL's own warning does not leak
        with pytest.raises(ValueError, match=r"bomb\.png: 12000x12000 pixels"):
            image_header(tmp_path / "bomb.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_file_is_found_from_its_header_and_tail(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(_random((64, 64, 3))).save(path)
    assert image_header(path).width == 64
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"cut\{suffix}: the (PNG|JPEG) file is truncated"):
        image_header(path)


def test_the_header_gives_size_and_mode_without_decoding(tmp_path: Path) -> None:
    Image.fromarray(_random((7, 9, 4)), mode="RGBA").save(tmp_path / "a.png")
    header = image_header(tmp_path / "a.png")
    assert (header.width, header.height, header.mode, header.format) == (9, 7, "RGBA", "PNG")
    with pytest.raises(FileNotFoundError):
        image_header(tmp_path / "missing.png")
    (tmp_path / "not.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"not\.png: cannot read the image"):
        image_header(tmp_path / "not.png")
