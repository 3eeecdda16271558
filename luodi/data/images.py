"""Image datasets and inputs: MNIST-style IDX files, image folders, scikit-learn's 8x8 digits, single images.

Every reader returns an `ImageSet`: float32 pixels (N, C, H, W) in [0, 1] and a list of labels.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from luodi.errors import BadRequest, ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Pixels (N, C, H, W) float32 in [0, 1] and one label per image (None when unlabelled)."""

    x: np.ndarray
    y: list[Any]

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: Any) -> ImageSet:
        idx = np.asarray(idx)
        return ImageSet(self.x[idx], [self.y[i] for i in idx])


# --- IDX (MNIST) ---------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped), as distributed on yann.lecun.com/exdb/mnist."""
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ConfigError(
            f"'{p}' is not an IDX file (bad magic number); expected MNIST-style *-ubyte(.gz) files"
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"'{p}' is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def _labels_file_for(images: Path) -> Path | None:
    """MNIST naming: t10k-images-idx3-ubyte.gz -> t10k-labels-idx1-ubyte.gz."""
    name = re.sub(r"images[-.]idx3", "labels-idx1", images.name)
    cand = images.with_name(name)
    return cand if name != images.name and cand.exists() else None


def read_idx_dataset(path: Path, options: dict[str, Any] | None = None) -> ImageSet:
    """An IDX images file (labels found beside it) or a folder holding one images/labels pair.

    options: `images` and `labels` file names inside the folder (needed when it holds several pairs).
    """
    options = options or {}
    if path.is_dir():
        if "images" in options:
            images = path / options["images"]
        else:
            found = sorted(f for f in path.iterdir() if re.search(r"images[-.]idx3", f.name))
            if len(found) != 1:
                raise ConfigError(
                    f"'data.path' folder {path} holds {len(found)} IDX image files; name one with "
                    "data.options.images (and data.options.labels)"
                )
            images = found[0]
        labels = path / options["labels"] if "labels" in options else _labels_file_for(images)
    else:
        images, labels = (
            path,
            (path.parent / options["labels"] if "labels" in options else _labels_file_for(path)),
        )
    if not images.exists():
        raise ConfigError(f"'data.options.images': {images} not found")
    x = read_idx(images)
    if x.ndim != 3:
        raise ConfigError(
            f"'{images}' holds an array of shape {x.shape}; expected images (count, rows, cols)"
        )
    y: list[Any] = [None] * len(x)
    if labels is not None:
        if not labels.exists():
            raise ConfigError(f"'data.options.labels': {labels} not found")
        lab = read_idx(labels)
        if len(lab) != len(x):
            raise ConfigError(f"{labels.name} has {len(lab)} labels but {images.name} has {len(x)} images")
        y = [int(v) for v in lab]
    return ImageSet((x.astype(np.float32) / 255.0)[:, None], y)


# --- image folders and single images ------------------------------------------------------------------


def decode_image(
    data: bytes, size: tuple[int, int] | None, channels: int, field: str = "image", name: str | None = None
) -> np.ndarray:
    """Image bytes (png/jpg/...) -> float32 (C, H, W) in [0, 1], resized to `size` (H, W) when given; `name`:
    the file they came from, for the error message."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        why = "not an image format Pillow knows" if isinstance(e, UnidentifiedImageError) else str(e)
        what = f"'{field}' ({name})" if name else f"'{field}'"
        raise BadRequest(f"{what} is not a readable image ({why}); send a png/jpg file", param=field) from e
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_image_folder(root: Path, size: tuple[int, int], channels: int) -> ImageSet:
    """`root/<label>/<image>`: one sub-folder per class."""
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    xs, ys = [], []
    for d in classes:
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                xs.append(decode_image(f.read_bytes(), size, channels, field=str(f)))
                ys.append(d.name)
    if not xs:
        raise ConfigError(
            f"'data.path' folder {root} has no images in class sub-folders; "
            f"expected {root}/<label>/<image>.png "
            "(or MNIST IDX files with data.format: idx)"
        )
    return ImageSet(np.stack(xs), ys)


def read_sklearn_digits() -> ImageSet:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0-16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return ImageSet((d.images.astype(np.float32) / 16.0)[:, None], [int(v) for v in d.target])


def guess_image_format(path: Path) -> str:
    if path.is_dir():
        if any(re.search(r"idx3", f.name) for f in path.iterdir()):
            return "idx"
        return "image-folder"
    if "idx3" in path.name or path.name.endswith("-ubyte") or path.name.endswith("-ubyte.gz"):
        return "idx"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    raise ConfigError(
        f"cannot tell the image data format of '{path}'; "
        "set data.format to idx, image-folder or sklearn:digits"
    )


def image_from_value(value: Any, size: tuple[int, int], channels: int, field: str = "image") -> np.ndarray:
    """A request's image -> (C, H, W) float32 in [0, 1].

    Accepts a file path, base64 text (optionally a data: URL), raw bytes, or an array/nested list of pixels
    (H, W), (H, W, C) or (C, H, W), either in [0, 1] or in [0, 255].
    """
    if isinstance(value, bytes | bytearray):
        return decode_image(bytes(value), size, channels, field)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("data:"):
            s = s.split(",", 1)[-1]
        p = Path(s).expanduser() if len(s) < 4096 else None
        if p is not None and p.suffix.lower() in IMAGE_SUFFIXES:
            if not p.exists():
                raise BadRequest(f"'{field}': image file '{s}' not found", param=field)
            return decode_image(p.read_bytes(), size, channels, field, name=p.name)
        try:
            data = base64.b64decode(s, validate=True)
        except ValueError as e:
            raise BadRequest(
                f"'{field}' must be an image file path, base64-encoded png/jpg, or an array of pixels",
                param=field,
            ) from e
        return decode_image(data, size, channels, field)
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"'{field}': pixel array is ragged or not numeric ({e})", param=field) from e
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3):
        arr = arr.transpose(2, 0, 1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4) or min(arr.shape[1:]) < 2:
        raise BadRequest(
            f"'{field}': pixel array of shape {arr.shape} is not an image; "
            "expected (H, W), (H, W, C) or (C, H, W)",
            param=field,
        )
    if not np.isfinite(arr).all():
        raise BadRequest(f"'{field}': pixel array holds NaN or infinite values", param=field)
    if arr.max() > 1.0:
        arr = arr / 255.0
    arr = arr[:3]
    if channels == 1 and arr.shape[0] == 3:
        arr = (0.299 * arr[0] + 0.587 * arr[1] + 0.114 * arr[2])[None]
    elif channels == 3 and arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    if arr.shape[1:] != tuple(size):
        import torch

        t = torch.nn.functional.interpolate(torch.from_numpy(arr)[None], size=tuple(size), mode="bilinear")
        arr = t[0].numpy()
    return np.clip(arr, 0.0, 1.0).astype(np.float32)
