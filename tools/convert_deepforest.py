"""Convert the tree-crown data bundled in the deepforest wheel into ``data/trees/`` (run once; the result is committed).

The MIT-licensed ``deepforest`` package (Weinstein et al.) ships NEON aerial RGB imagery at 10 cm
per pixel with tree-crown boxes in Pascal VOC XML, in ``deepforest/data/`` of its wheel. This
script reads the wheel as a zip (deepforest is never installed or imported) and writes:

* ``train/``: the two Yellowstone (YELL) crops cut into 256-pixel JPEG tiles overlapping by 32
  pixels (``retina_edu.tiling``), a crown cut by a tile border kept when half its area is inside,
  one class ``Tree``, as a COCO folder (``annotations.json`` + ``images/``);
* ``val/``: the 400 x 400 SOAP_061 image (another NEON site) as JPEG with its 37 crowns as ``Tree``
  (``annotations.json``) and with deepforest's two-class labels ``Alive``/``Dead``
  (``annotations_alive_dead.json``);
* ``SHA256SUMS`` (the wheel and every source file used), ``LICENSE`` (deepforest's) and
  ``ATTRIBUTION.md``.

OSBS_029 is left out on purpose: it stays an unseen site for checking that detectors trained here
generalise. Coordinates are taken as the XML gives them: deepforest writes the same numbers in its
CSV files, as 0-based pixel edges, so the VOC "1-based" shift is not applied.

Usage::

    pip download deepforest==2.1.0 --no-deps -d /tmp/df
    python tools/convert_deepforest.py /tmp/df/deepforest-2.1.0-py3-none-any.whl --out data/trees
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import torch
from PIL import Image

from retina_edu.tiling import crop_boxes, tile_windows

WHEEL_VERSION = "2.1.0"
TRAIN_SOURCES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
VAL_SOURCE = "SOAP_061"
EXCLUDED = "OSBS_029"  # the unseen site: never converted
TILE = 256  # the training input size (Preset.cpu's image_size)
OVERLAP = 32
MIN_VISIBLE = 0.5
JPEG_QUALITY = 90
CLASS = "Tree"

ATTRIBUTION = """# Tree crowns: sources, licence and attribution

The images and boxes in this folder were converted by `tools/convert_deepforest.py` from the data
bundled in the `deepforest` {version} Python wheel (`deepforest/data/`), unchanged except for the
tiling, the JPEG encoding (quality {quality}) and the single class name `Tree` (`SHA256SUMS` lists
the checksums of the wheel and of every source file).

- Software and bundled data: DeepForest, MIT licence, Copyright (c) 2019 Ben Weinstein (see
  `LICENSE`). Authors: Ben Weinstein, Henry Senyondo, Josh Veitch-Michaelis, Ethan White and
  others (https://github.com/weecology/DeepForest).
- Imagery: the National Ecological Observatory Network (NEON), a program sponsored by the U.S.
  National Science Foundation and operated by Battelle; RGB camera mosaics at 10 cm per pixel
  (data product DP3.30010.001), sites YELL (Yellowstone, training) and SOAP (Soaproot Saddle,
  validation).
- Tree-crown annotations: Weinstein, B. G., Marconi, S., Bohlman, S., Zare, A., White, E.
  (2019). Individual tree-crown detection in RGB imagery using semi-supervised deep learning
  neural networks. Remote Sensing 11(11), 1309. https://doi.org/10.3390/rs11111309 ; and
  Weinstein, B. G., et al. (2020). DeepForest: A Python package for RGB deep learning tree crown
  delineation. Methods in Ecology and Evolution 11(12), 1743-1751.
  https://doi.org/10.1111/2041-210X.13472

Site `OSBS_029`, also in the wheel, is deliberately not included: it is kept as an unseen site
for checking that a detector trained here generalises.
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_boxes(xml_bytes: bytes, where: str) -> tuple[list[list[float]], list[str], tuple[int, int]]:
    """``(boxes xyxy, names, (H, W))`` of a deepforest VOC file, checked."""
    root = ET.fromstring(xml_bytes)
    size = root.find("size")
    width, height = int(size.findtext("width")), int(size.findtext("height"))
    boxes, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        box = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            raise ValueError(f"{where}: box {box} is empty or outside the {width} x {height} image")
        boxes.append(box)
        names.append(obj.findtext("name").strip())
    return boxes, names, (height, width)


def coco(images: list[dict], annotations: list[dict], classes: list[str], description: str) -> dict:
    return {
        "info": {
            "description": description,
            "generator": "tools/convert_deepforest.py",
            "source": f"deepforest {WHEEL_VERSION} wheel, deepforest/data/",
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }


def annotation(ann_id: int, image_id: int, box: list[float], category_id: int) -> dict:
    x1, y1, x2, y2 = (round(v, 2) for v in box)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": round((x2 - x1) * (y2 - y1), 2),
        "iscrowd": 0,
    }


def save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, "JPEG", quality=JPEG_QUALITY, optimize=True)


def convert(wheel: Path, out: Path) -> None:
    wheel_bytes = wheel.read_bytes()
    sums = [f"{sha256(wheel_bytes)}  {wheel.name}"]
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "train" / "images").mkdir(parents=True)
    (staging / "val" / "images").mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as zf:

        def read(name: str) -> bytes:
            data = zf.read(name)
            sums.append(f"{sha256(data)}  {name}")
            return data

        images, anns = [], []
        for source in TRAIN_SOURCES:
            assert EXCLUDED not in source
            boxes, _, (height, width) = read_boxes(read(f"deepforest/data/{source}.xml"), source)
            picture = Image.open(io.BytesIO(read(f"deepforest/data/{source}.png"))).convert("RGB")
            if picture.size != (width, height):
                raise ValueError(f"{source}: image is {picture.size}, the XML says {(width, height)}")
            all_boxes = torch.tensor(boxes, dtype=torch.float64)
            for x1, y1, x2, y2 in tile_windows((height, width), TILE, OVERLAP):
                image_id = len(images) + 1
                name = f"{source}_x{x1:04d}_y{y1:04d}.jpg"
                save_jpeg(picture.crop((x1, y1, x2, y2)), staging / "train" / "images" / name)
                images.append(
                    {
                        "id": image_id,
                        "file_name": name,
                        "width": x2 - x1,
                        "height": y2 - y1,
                        "source": f"{source}.png",
                        "window": [x1, y1, x2, y2],
                    }
                )
                tile_boxes, _ = crop_boxes(all_boxes, (x1, y1, x2, y2), MIN_VISIBLE)
                for box in tile_boxes.tolist():
                    anns.append(annotation(len(anns) + 1, image_id, box, 1))
        (staging / "train" / "annotations.json").write_text(
            json.dumps(coco(images, anns, [CLASS], f"NEON YELL tree crowns, {TILE}-px tiles overlapping by {OVERLAP}"))
        )

        boxes, names, (height, width) = read_boxes(read(f"deepforest/data/{VAL_SOURCE}.xml"), VAL_SOURCE)
        picture = Image.open(io.BytesIO(read(f"deepforest/data/{VAL_SOURCE}.png"))).convert("RGB")
        save_jpeg(picture, staging / "val" / "images" / f"{VAL_SOURCE}.jpg")
        image = [
            {"id": 1, "file_name": f"{VAL_SOURCE}.jpg", "width": width, "height": height, "source": f"{VAL_SOURCE}.png"}
        ]
        one = [annotation(i + 1, 1, box, 1) for i, box in enumerate(boxes)]
        (staging / "val" / "annotations.json").write_text(
            json.dumps(coco(image, one, [CLASS], "NEON SOAP tree crowns (validation site)"))
        )
        two_classes = sorted(set(names))  # ["Alive", "Dead"]
        two = [annotation(i + 1, 1, box, two_classes.index(n) + 1) for i, (box, n) in enumerate(zip(boxes, names))]
        (staging / "val" / "annotations_alive_dead.json").write_text(
            json.dumps(coco(image, two, two_classes, "NEON SOAP tree crowns, alive or dead"))
        )

        (staging / "LICENSE").write_bytes(read("deepforest-2.1.0.dist-info/licenses/LICENSE"))
        (staging / "AUTHORS.md").write_bytes(read("deepforest-2.1.0.dist-info/licenses/AUTHORS.md"))
    (staging / "ATTRIBUTION.md").write_text(ATTRIBUTION.format(version=WHEEL_VERSION, quality=JPEG_QUALITY))
    (staging / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"{out}: {len(images)} training tiles with {len(anns)} boxes; {len(boxes)} validation crowns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help=f"deepforest-{WHEEL_VERSION}-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=Path("data/trees"))
    args = parser.parse_args()
    convert(args.wheel, args.out)


if __name__ == "__main__":
    main()
