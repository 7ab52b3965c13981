"""Reading photos as a person sees them, and the files of a dataset copy that are not images.

Phone cameras store the sensor's pixels and an EXIF ``Orientation`` tag (6: rotate 90 degrees
clockwise to view, 8: counter-clockwise, 3: 180, and mirrored variants); every viewer applies it, so
every emobench loader does too: ``open_upright`` is the one place an image file is decoded.

Copies of datasets met in the wild carry files that are not data: macOS ``__MACOSX/`` folders and
AppleDouble ``._name.jpg`` files (resource forks that *look* like JPEGs by name), ``.DS_Store``,
Windows' ``Thumbs.db`` / ``desktop.ini`` and other hidden files. ``junk_reason`` names them so the
loaders skip and count them instead of failing on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_JUNK_FILES = {".ds_store": ".DS_Store", "thumbs.db": "Thumbs.db", "desktop.ini": "desktop.ini",
               "ehthumbs.db": "Thumbs.db"}


def junk_reason(name: str) -> str | None:
    """Why a file or folder called ``name`` is not dataset content (None when it may be).

    Returns one of '__MACOSX', 'AppleDouble ._*', '.DS_Store', 'Thumbs.db', 'desktop.ini', 'hidden'.
    """
    if name == "__MACOSX":
        return "__MACOSX"
    if name.startswith("._"):
        return "AppleDouble ._*"
    known = _JUNK_FILES.get(name.lower())
    if known:
        return known
    if name.startswith("."):
        return "hidden"
    return None


def open_upright(path: str | Path) -> Image.Image:
    """Decode an image file to RGB, turned the way its EXIF orientation says it is viewed.

    Raises:
        FileNotFoundError, PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError: as PIL does;
        the dataset layer turns them into ``MissingImageError`` / ``CorruptImageError``.
    """
    with Image.open(path) as img:
        img.load()
        upright = ImageOps.exif_transpose(img)
        return upright.convert("RGB")


@dataclass(frozen=True)
class FaceCrop:
    """Where to cut a face out of an upright image: a square box (may reach past the borders, which
    are then filled with the edge colour) and the rotation, about the box centre, that levels the eyes.

    ``left, top, right, bottom`` are in the upright image's pixels; ``angle_deg`` is the eye line's
    tilt as seen (degrees, clockwise positive: the right eye lower), undone by rotating the other way.
    """

    left: float
    top: float
    right: float
    bottom: float
    angle_deg: float = 0.0

    def apply(self, image: Image.Image, size: int | None = None) -> Image.Image:
        """Cut this crop from ``image`` (rotated to level the eyes first), optionally resized to ``size``."""
        cx, cy = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        if self.angle_deg:
            fill = image.getpixel((min(max(int(cx), 0), image.width - 1), 0))
            image = image.rotate(self.angle_deg, resample=Image.Resampling.BICUBIC, center=(cx, cy), fillcolor=fill)
        box = tuple(round(v) for v in (self.left, self.top, self.right, self.bottom))
        crop = _crop_padded(image, box)  # type: ignore[arg-type]
        if size is not None and crop.size != (size, size):
            crop = crop.resize((size, size), Image.Resampling.BICUBIC)
        return crop


def _crop_padded(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """``image.crop(box)`` but a box past the border is filled by replicating the edge, not black."""
    left, top, right, bottom = box
    if left >= 0 and top >= 0 and right <= image.width and bottom <= image.height:
        return image.crop(box)
    import numpy as np

    arr = np.asarray(image)
    pad = ((max(0, -top), max(0, bottom - image.height)), (max(0, -left), max(0, right - image.width)), (0, 0))
    padded = np.pad(arr, pad, mode="edge")
    x0, y0 = left + pad[1][0], top + pad[0][0]
    return Image.fromarray(padded[y0:y0 + bottom - top, x0:x0 + right - left])


__all__ = ["IMAGE_SUFFIXES", "FaceCrop", "junk_reason", "open_upright"]
