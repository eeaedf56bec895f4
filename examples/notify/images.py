"""Thumbnails with Pillow, for the ``cpu_bound`` task that runs them in the process pool.

Plain arguments and a JSON result, since the call crosses into another process; outputs are
written under temporary names and renamed into place, so a crash never leaves a half-written
thumbnail where a client would download it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

SIZES = (64, 256, 1024)
# Larger than any photo a phone takes; a "decompression bomb" (a small file that decodes to
# gigabytes) is refused before it is decoded.
MAX_PIXELS = 64_000_000
FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"}


class NotAnImage(ValueError):
    """The upload is not an image Pillow can read, or one too large to decode."""


def check_image(path: Path) -> tuple[str, int, int]:
    """The format and size of the image at ``path``, reading its header only."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.verify()
                kind, (width, height) = image.format or "", image.size
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, OSError, SyntaxError, ValueError) as exc:  # fmt: skip
        raise NotAnImage(f"not an image this service reads: {exc}") from None
    if kind not in FORMATS:
        raise NotAnImage(
            f"{kind or 'unknown'} images are not accepted; send one of {sorted(FORMATS)}"
        )
    if width * height > MAX_PIXELS:
        raise NotAnImage(f"{width}x{height} is over {MAX_PIXELS:,} pixels")
    return kind, width, height


def make_thumbnails(source: Path, out_dir: Path) -> dict[str, Any]:
    kind, width, height = check_image(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    with Image.open(source) as image:
        image.load()
        rgb = image.convert("RGB")
        for size in SIZES:
            copy = rgb.copy()
            copy.thumbnail((size, size))
            target = out_dir / f"{size}.jpg"
            partial = out_dir / f".{size}.jpg.partial"
            copy.save(partial, "JPEG", quality=85)
            os.replace(partial, target)
            made[str(size)] = target.name
    return {"format": kind, "width": width, "height": height, "thumbnails": made}
