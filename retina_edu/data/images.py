"""Reading image files: every PIL mode to RGB in [0, 1], or a one-line error naming the file.

Datasets call :func:`image_header` on every image when they are opened (it reads the header, not the
pixels, so opening 2,000 images takes well under a second), and :func:`load_image` when an image is
used. Between them, a file that cannot be trained on is reported before training starts:

* unreadable, corrupt or truncated files (the PNG ``IEND`` chunk or JPEG end marker is missing);
* modes we cannot convert faithfully (32-bit float, ...), named;
* images over :data:`MAX_IMAGE_PIXELS` (a "decompression bomb": a few KB of PNG can declare
  billions of pixels).

16-bit grayscale PNGs (PIL modes ``I;16``, ``I``) are scaled by 1/65535, not saturated to white as
``convert("RGB")`` would do.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["MAX_IMAGE_PIXELS", "SUPPORTED_MODES", "ImageHeader", "image_header", "load_image"]

MAX_IMAGE_PIXELS = 64_000_000
"""The largest image we read (8000 x 8000). COCO's images are at most 640 px a side; PIL only warns
below 89 MP, and a 144 MP PNG of 17 KB made ``detect`` use 13.5 GB. Raise it if you trust your files."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SUPPORTED_MODES: tuple[str, ...] = (
    "RGB",
    "RGBA",
    "RGBX",
    "RGBa",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "1",
    "CMYK",
    "YCbCr",
    *_SIXTEEN_BIT_MODES,
)
"""PIL modes :func:`load_image` converts to RGB; any other mode (``F``, ``HSV``, ``LAB``, ...) is refused by name."""

_SIXTEEN_BIT_MAX = 65535.0


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares about itself, read without decoding its pixels."""

    width: int
    height: int
    mode: str
    format: str | None


def _check_declared(path: str | os.PathLike, width: int, height: int, mode: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{path}: {width}x{height} pixels is more than MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS:,} "
            f"(a decompression bomb?); shrink the image, or raise "
            f"retina_edu.data.images.MAX_IMAGE_PIXELS if you trust the file"
        )
    if mode not in SUPPORTED_MODES:
        raise ValueError(
            f"{path}: image mode {mode!r} is not supported (supported: {', '.join(SUPPORTED_MODES)}); "
            f"save it as 8-bit RGB or 8/16-bit grayscale"
        )


def _open(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` with PIL's own bomb warning silenced (we check our smaller limit) and its errors named."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: too many pixels (a decompression bomb?): {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e}); replace or remove the file") from e


def _is_truncated(path: str | os.PathLike, image_format: str | None) -> bool:
    """Whether a PNG or JPEG lacks its end marker (a copy or download cut short); other formats: False."""
    if image_format not in ("PNG", "JPEG"):
        return False
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 1024))
        tail = f.read()
    # JPEG writers may pad after the end-of-image marker, hence "in the last KB", not "at the end".
    return b"IEND" not in tail[-12:] if image_format == "PNG" else b"\xff\xd9" not in tail


def image_header(path: str | os.PathLike) -> ImageHeader:
    """Read an image's size and mode from its header, and check that it can be loaded.

    Args:
        path: image file.

    Returns:
        ``ImageHeader(width, height, mode, format)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image PIL reads, is truncated, has a mode :func:`load_image`
            refuses, or more than :data:`MAX_IMAGE_PIXELS` pixels (the message names the file).
    """
    with _open(path) as im:
        header = ImageHeader(im.size[0], im.size[1], im.mode, im.format)
    _check_declared(path, header.width, header.height, header.mode)
    if _is_truncated(path, header.format):
        raise ValueError(
            f"{path}: the {header.format} file is truncated (its end marker is missing); copy or download it again"
        )
    return header


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as RGB.

    Grayscale, palette, CMYK, YCbCr and 1-bit images are converted to RGB by PIL; alpha is dropped;
    16-bit grayscale (``I;16``, ``I``) is scaled by 1/65535 and repeated on the three channels.

    Args:
        path: image file (anything PIL reads, in a mode of :data:`SUPPORTED_MODES`).

    Returns:
        Tensor[3, H, W] float32 in [0, 1].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: PIL cannot read it (corrupt or not an image), its mode is not supported, or it
            has more than :data:`MAX_IMAGE_PIXELS` pixels; the message names the file.
    """
    with _open(path) as im:
        _check_declared(path, im.size[0], im.size[1], im.mode)
        try:
            if im.mode in _SIXTEEN_BIT_MODES:
                gray = np.array(im)
                if gray.size and (gray.min() < 0 or gray.max() > _SIXTEEN_BIT_MAX):
                    raise ValueError(
                        f"{path}: {im.mode} pixel values span {gray.min()}..{gray.max()}, outside "
                        f"the 16-bit range 0..65535; save it as an 8-bit or 16-bit PNG"
                    )
                plane = torch.from_numpy(gray.astype(np.float32) / _SIXTEEN_BIT_MAX)
                return plane.expand(3, *plane.shape).contiguous()
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
            array = np.array(im.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError) as e:
            raise ValueError(
                f"{path}: cannot read the image ({type(e).__name__}: {e}); replace or remove the file"
            ) from e
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(255)
