"""Images beside the clouds: ground-truth masks and RGB pictures (PNG and the other formats
Pillow decodes), read and written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anomalib_3d.data.io.cloud import as_array
from anomalib_3d.data.io.files import require_file
from anomalib_3d.errors import CorruptFileError, InvalidPointsError, UnsupportedFormatError
from anomalib_3d.runtime.files import atomic_write

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tiff", ".tif")


def _open_image(path: str | Path, load: bool = True) -> tuple[PILImage, Path]:
    """The opened image and its path; ``load`` decodes the pixels (else only the header is read)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {path.suffix or '(none)'!r} is not a supported image format.",
            path,
            f"use one of {', '.join(IMAGE_EXTENSIONS)}.",
        )
    path = require_file(path)
    try:
        image = Image.open(path)
        if load:
            image.load()
    except Exception as err:  # PIL: UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError...
        raise CorruptFileError(f"cannot be decoded as an image ({err}).", path, "copy or re-export the file again.") from err
    return image, path


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image (mask or RGB) from its header only."""
    image, _ = _open_image(path, load=False)
    width, height = image.size
    image.close()
    return height, width


def read_mask_png(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask; any nonzero value (in any channel) is anomalous.

    Returns:
        ``(H, W) bool``.
    """
    image, _ = _open_image(path)
    array = np.asarray(image)
    if array.ndim == 3:
        array = array.any(axis=2)
    return array != 0


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image; grayscale / palette / RGBA images are converted to RGB.

    Returns:
        ``(H, W, 3) uint8``.
    """
    image, path = _open_image(path)
    try:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except Exception as err:
        raise CorruptFileError(f"cannot be decoded as an RGB image ({err}).", path, "copy or re-export the file again.") from err


def write_mask_png(path: str | Path, mask: Any) -> None:
    """Write an ``(H, W)`` mask as an 8-bit PNG: 255 where ``mask`` is nonzero, else 0."""
    from PIL import Image

    path = Path(path)
    mask = as_array(mask)
    if mask.ndim != 2:
        raise InvalidPointsError(f"mask must have shape (H, W), got {mask.shape}.", path, "pass a 2D mask.")
    with atomic_write(path) as handle:
        Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8), mode="L").save(handle, format="PNG")


def write_rgb_png(path: str | Path, rgb: Any) -> None:
    """Write an ``(H, W, 3)`` image (uint8, or float in [0, 1]) as a PNG."""
    from PIL import Image

    path = Path(path)
    rgb = as_array(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidPointsError(f"rgb must have shape (H, W, 3), got {rgb.shape}.", path, "pass an RGB image.")
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    with atomic_write(path) as handle:
        Image.fromarray(rgb, mode="RGB").save(handle, format="PNG")

