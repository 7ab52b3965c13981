"""Find the face in a photo, and cut it out the way the training data shows faces.

The training sets (FER-2013, RAF-DB aligned) are tight, upright, roughly eye-levelled face crops;
phone photos are whole scenes, often stored sideways with an EXIF orientation. Feeding a scene to
the classifier resizes a face that fills 10% of it to a few pixels. This module turns photos into
crops like the training data: EXIF orientation applied, the most confident face found, a square
box with a margin around it, rotated about its centre so the eyes are level where both are found.

The detector is OpenCV's Viola-Jones cascade (``haarcascade_frontalface_default.xml``) with its eye
cascades for the alignment: the cascades ship inside the ``opencv-python-headless`` wheel
(``cv2.data``), so nothing is downloaded at run time, and the dependency is numpy alone (no second
torch, no TensorFlow). It finds upright, roughly frontal faces, which is what an expression
classifier trained on FER-2013/RAF-DB can use anyway; profile faces are reported as "no face". A
detection's ``score`` is the cascade's level weight for it (higher = more confident; not a
probability), used to rank faces within an image.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_bytes, atomic_write_text
from training.images import IMAGE_SUFFIXES, FaceCrop, junk_reason, open_upright
from training.labels import UnknownEmotionError, canonical_emotion

log = logging.getLogger(__name__)

FACES_CSV = "faces.csv"
CSV_COLUMNS = ("source", "emotion", "x", "y", "w", "h", "score", "faces_found", "aligned", "output", "reason")
REASON_NO_FACE = "no face"
REASON_SEVERAL = "several faces"
REASON_UNDECODABLE = "undecodable"


class FaceDetectorError(EmobenchError):
    """The face detector cannot be loaded, or the folders given cannot be processed."""


@dataclass(frozen=True)
class Face:
    """One detected face in an upright image: box in pixels, score, and the eye centres if found.

    ``left_eye`` is the eye on the image's left (the person's right eye).
    """

    x: int
    y: int
    w: int
    h: int
    score: float
    left_eye: tuple[float, float] | None = None
    right_eye: tuple[float, float] | None = None

    @property
    def eyes_found(self) -> bool:
        return self.left_eye is not None and self.right_eye is not None

    def eye_angle_deg(self) -> float:
        """Tilt of the eye line (degrees, clockwise positive as seen; 0 without both eyes)."""
        if self.left_eye is None or self.right_eye is None:
            return 0.0
        (lx, ly), (rx, ry) = self.left_eye, self.right_eye
        return math.degrees(math.atan2(ry - ly, rx - lx))


@dataclass(frozen=True)
class FacesConfig:
    """How faces are cropped.

    Attributes:
        margin: extra context on each side, as a fraction of the detected box's side (0.25: the crop
            is 1.5x the box; RAF-DB's aligned crops show about this much).
        align: level the eyes by rotating about the box centre when both eyes are found.
        one_face: refuse (and report) an image with more than one face instead of taking the most confident.
        size: resize crops to ``size`` x ``size`` pixels (None: keep the photo's resolution).
        max_detect_side: detect on a copy downscaled to at most this side (phone photos are 4000 px;
            the box is mapped back to full resolution).
        min_face_fraction: ignore faces whose side is under this fraction of the image's shorter side.
        max_tilt_deg: eye lines tilted more than this are taken as a mis-detection, not aligned.
    """

    margin: float = 0.25
    align: bool = True
    one_face: bool = False
    size: int | None = None
    max_detect_side: int = 1024
    min_face_fraction: float = 0.05
    max_tilt_deg: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 2:
            raise FaceDetectorError(f"margin must lie in 0..2 (a fraction of the face box), got {self.margin}")
        if self.size is not None and self.size < 8:
            raise FaceDetectorError(f"crop size must be at least 8 pixels, got {self.size}")
        if self.max_detect_side < 64:
            raise FaceDetectorError(f"max_detect_side must be at least 64 pixels, got {self.max_detect_side}")


class FaceDetector:
    """OpenCV's frontal-face cascade plus its two eye cascades, loaded once.

    Raises:
        FaceDetectorError: OpenCV is not installed or its cascade files are missing.
    """

    def __init__(self, config: FacesConfig = FacesConfig()) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise FaceDetectorError(
                "OpenCV is not installed; face detection needs it",
                hint="pip install 'opencv-python-headless<5' (it ships the face cascades)",
            ) from exc
        self._cv2 = cv2
        self.config = config
        folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", ""))
        self._face = self._load(folder / "haarcascade_frontalface_default.xml")
        self._eye = self._load(folder / "haarcascade_eye.xml")
        self._eye_glasses = self._load(folder / "haarcascade_eye_tree_eyeglasses.xml")

    def _load(self, path: Path):
        if not path.is_file():
            raise FaceDetectorError(
                f"OpenCV's cascade file {path} is missing (OpenCV {self._cv2.__version__})",
                hint="install opencv-python-headless<5: OpenCV 5 wheels no longer ship the Haar cascades",
            )
        cascade = self._cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise FaceDetectorError(f"OpenCV could not read the cascade {path}", hint="reinstall opencv-python-headless")
        return cascade

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces in an upright RGB image, most confident first (boxes in ``image``'s pixels)."""
        cv2 = self._cv2
        full = np.asarray(image.convert("L"))
        scale = min(1.0, self.config.max_detect_side / max(full.shape))
        gray = full
        if scale < 1.0:
            gray = cv2.resize(full, (round(full.shape[1] * scale), round(full.shape[0] * scale)),
                              interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(20, int(min(gray.shape) * self.config.min_face_fraction))
        boxes, _, weights = self._face.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).ravel(), strict=True):
            box = (round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            left, right = self._eyes(full, *box)
            faces.append(Face(*box, score=round(float(weight), 4), left_eye=left, right_eye=right))
        faces.sort(key=lambda f: (-f.score, -f.w * f.h))
        return faces

    _EYE_FACE_SIDE = 200  # eyes are searched in the face box resized to this side, whatever the photo's size

    def _eyes(self, full: np.ndarray, x: int, y: int, w: int, h: int):
        """The centre of the best eye candidate in each upper half of the face box (or None, None)."""
        cv2 = self._cv2
        n = self._EYE_FACE_SIDE
        face = full[max(0, y):y + h, max(0, x):x + w]
        if face.size == 0 or face.shape[0] < 16 or face.shape[1] < 16:
            return None, None
        sx, sy = face.shape[1] / n, face.shape[0] / n
        # no histogram equalisation here: on a face-sized patch it flattens the eye/brow contrast
        # the eye cascades look for (measured: no eye found on grace_hopper.jpg with it, both without)
        face = cv2.resize(face, (n, n), interpolation=cv2.INTER_AREA)
        top, bottom = n // 6, int(n * 0.6)
        found: list[tuple[float, float] | None] = []
        for x0, x1 in ((0, n // 2), (n // 2, n)):
            roi = face[top:bottom, x0:x1]
            best = None
            for cascade in (self._eye, self._eye_glasses):
                boxes, _, weights = cascade.detectMultiScale3(
                    roi, scaleFactor=1.05, minNeighbors=2, minSize=(n // 10, n // 10), maxSize=(n // 3, n // 3),
                    outputRejectLevels=True)
                boxes = np.asarray(boxes).reshape(-1, 4)
                if len(boxes):
                    ex, ey, ew, eh = boxes[int(np.argmax(np.asarray(weights).ravel()))]
                    best = (float(max(0, x) + (x0 + ex + ew / 2) * sx), float(max(0, y) + (top + ey + eh / 2) * sy))
                    break
            found.append(best)
        left, right = found
        if left is None or right is None:
            return None, None
        distance = math.dist(left, right)
        tilt = abs(math.degrees(math.atan2(right[1] - left[1], right[0] - left[0])))
        if not (0.2 * w <= distance <= 0.75 * w) or tilt > self.config.max_tilt_deg:
            return None, None  # two unrelated blobs, not a pair of eyes
        return (round(left[0], 1), round(left[1], 1)), (round(right[0], 1), round(right[1], 1))

    def crop_for(self, face: Face) -> FaceCrop:
        """The square crop around ``face`` with the configured margin, eye-levelled when both eyes are known."""
        side = max(face.w, face.h) * (1 + 2 * self.config.margin)
        cx, cy = face.x + face.w / 2, face.y + face.h / 2
        angle = face.eye_angle_deg() if self.config.align and face.eyes_found else 0.0
        return FaceCrop(left=cx - side / 2, top=cy - side / 2, right=cx + side / 2, bottom=cy + side / 2,
                        angle_deg=round(angle, 3))


@dataclass(frozen=True)
class FaceRow:
    """One row of ``faces.csv``: a source image and what became of it."""

    source: str
    emotion: str
    face: Face | None
    faces_found: int
    output: str | None
    reason: str | None

    def as_csv(self) -> dict[str, object]:
        f = self.face
        return {
            "source": self.source, "emotion": self.emotion,
            "x": "" if f is None else f.x, "y": "" if f is None else f.y,
            "w": "" if f is None else f.w, "h": "" if f is None else f.h,
            "score": "" if f is None else f"{f.score:.4f}", "faces_found": self.faces_found,
            "aligned": "" if f is None else ("yes" if f.eyes_found else "no"),
            "output": self.output or "", "reason": self.reason or "",
        }


@dataclass(frozen=True)
class FacesResult:
    """What ``crop_faces`` did: a row per source image, the counts, and where faces.csv went."""

    rows: tuple[FaceRow, ...]
    csv_path: Path
    junk_skipped: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter("cropped" if r.reason is None else r.reason for r in self.rows)
        return {k: c.get(k, 0) for k in ("cropped", REASON_NO_FACE, REASON_SEVERAL, REASON_UNDECODABLE)}

    def summary(self) -> str:
        c = self.counts
        aligned = sum(1 for r in self.rows if r.face is not None and r.reason is None and r.face.eyes_found)
        text = (f"{len(self.rows)} images: {c['cropped']} faces cropped ({aligned} eye-aligned), "
                f"{c[REASON_NO_FACE]} without a face, {c[REASON_SEVERAL]} with several faces, "
                f"{c[REASON_UNDECODABLE]} undecodable")
        skipped = sum(self.junk_skipped.values())
        if skipped:
            text += f"; {skipped} non-image files skipped (" + ", ".join(
                f"{k} {v}" for k, v in sorted(self.junk_skipped.items())) + ")"
        return text


def list_custom_images(root: Path) -> tuple[list[tuple[str, str, Path]], Counter]:
    """``root/<emotion>/*`` image files as (folder name, canonical emotion, path), and the junk skipped.

    Raises:
        FaceDetectorError: ``root`` is missing or holds a folder that is not an emotion.
    """
    if not root.is_dir():
        raise FaceDetectorError(f"{root} is not a folder", hint="give a folder of <emotion>/ sub-folders of photos")
    junk: Counter = Counter()
    found = []
    for folder in sorted(root.iterdir()):
        reason = junk_reason(folder.name)
        if reason:
            junk[reason] += 1
            continue
        if not folder.is_dir():
            continue
        try:
            emotion = canonical_emotion(folder.name)
        except UnknownEmotionError as exc:
            raise FaceDetectorError(f"{folder}: folder name {folder.name!r} is not an emotion",
                                    hint="the custom layout is <emotion>/<photo>, e.g. happy/IMG_0001.jpg") from exc
        for path in sorted(folder.iterdir()):
            reason = junk_reason(path.name)
            if reason:
                junk[reason] += 1
            elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((folder.name, emotion, path))
    return found, junk


def crop_faces(
    src: str | Path,
    out: str | Path,
    config: FacesConfig = FacesConfig(),
    *,
    on_image: Callable[[FaceRow], None] | None = None,
    detector: FaceDetector | None = None,
) -> FacesResult:
    """Crop the face of every photo in a custom-layout folder into the same layout under ``out``.

    Each source image gives one ``faces.csv`` row: its box (upright pixels), score and output path,
    or why nothing was written ('no face', 'several faces' under ``one_face``, 'undecodable').
    Files are written atomically; re-running overwrites the crops and the csv.

    Raises:
        FaceDetectorError: ``src`` is not a custom layout, ``out`` lies inside it, or OpenCV is missing.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or src in out.parents:
        raise FaceDetectorError(f"output folder {out} lies inside the source {src}",
                                hint="choose an output folder outside the photos (a re-run would read the crops)")
    images, junk = list_custom_images(src)
    detector = detector or FaceDetector(config)
    rows = []
    for folder_name, emotion, path in images:
        row = _crop_one(detector, config, src, out, folder_name, emotion, path)
        rows.append(row)
        if on_image is not None:
            on_image(row)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.as_csv() for r in rows)
    csv_path = atomic_write_text(out / FACES_CSV, buf.getvalue())
    result = FacesResult(rows=tuple(rows), csv_path=csv_path, junk_skipped=dict(junk))
    log.info("faces: %s", result.summary())
    return result


def _crop_one(detector: FaceDetector, config: FacesConfig, src: Path, out: Path, folder_name: str, emotion: str,
              path: Path) -> FaceRow:
    source = path.relative_to(src).as_posix()
    try:
        image = open_upright(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        log.warning("%s: not a decodable image (%s)", path, exc)
        return FaceRow(source, emotion, None, 0, None, REASON_UNDECODABLE)
    faces = detector.detect(image)
    if not faces:
        return FaceRow(source, emotion, None, 0, None, REASON_NO_FACE)
    if config.one_face and len(faces) > 1:
        return FaceRow(source, emotion, faces[0], len(faces), None, REASON_SEVERAL)
    crop = detector.crop_for(faces[0]).apply(image, config.size)
    target = out / folder_name / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, _encode(crop, path.suffix.lower()))
    return FaceRow(source, emotion, faces[0], len(faces), target.relative_to(out).as_posix(), None)


def _encode(image: Image.Image, suffix: str) -> bytes:
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[suffix]
    image.save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


@dataclass(frozen=True)
class FaceScan:
    """What on-the-fly face cropping did to a dataset: images cropped, and those used whole."""

    cropped: int
    no_face: tuple[str, ...]

    def summary(self) -> str:
        text = f"faces: {self.cropped} cropped"
        if self.no_face:
            text += f", {len(self.no_face)} without a face used whole ({', '.join(self.no_face[:3])}"
            text += ", ...)" if len(self.no_face) > 3 else ")"
        return text


class _Dataset(Protocol):
    """What ``attach_face_crops`` needs of a ``training.datasets.EmotionDataset`` (no import: the dataset
    module calls this one)."""

    samples: list[Any]
    face_scan: Any

    def load_image(self, index: int) -> Image.Image: ...


def attach_face_crops(dataset: _Dataset, config: FacesConfig = FacesConfig(), *,
                      detector: FaceDetector | None = None) -> FaceScan:
    """Find the face of every image of ``dataset`` once; from then on it yields the face crops.

    An image without a detected face is used whole (so every target still sees the same image set)
    and named in the returned scan; ``dataset.face_scan`` keeps the scan for summaries.
    """
    detector = detector or FaceDetector(config)
    samples, no_face, cropped = [], [], 0
    for i, sample in enumerate(dataset.samples):
        faces = detector.detect(dataset.load_image(i))
        if faces:
            samples.append(replace(sample, crop=detector.crop_for(faces[0]), crop_size=config.size))
            cropped += 1
        else:
            samples.append(sample)
            no_face.append(sample.image_id)
    dataset.samples = samples
    scan = FaceScan(cropped=cropped, no_face=tuple(no_face))
    dataset.face_scan = scan
    log.info("%s", scan.summary())
    return scan


def iter_rows(csv_path: Path) -> Iterator[dict[str, str]]:
    """The rows of a ``faces.csv`` as dicts (for tests and tools reading the output back)."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


__all__ = [
    "CSV_COLUMNS", "FACES_CSV", "Face", "FaceDetector", "FaceDetectorError", "FaceRow", "FaceScan", "FacesConfig",
    "FacesResult", "attach_face_crops", "crop_faces", "iter_rows", "list_custom_images",
]
