"""Facial-expression datasets from a local root: FER-2013, RAF-DB and custom photo folders.

One ``EmotionDataset`` family reads every layout emobench supports:

- ``fer2013_csv``: the original ``fer2013.csv`` (``emotion,pixels,Usage``; 48x48 grayscale pixel
  strings; Usage Training -> train, PublicTest -> val, PrivateTest -> test);
- ``fer2013_folder``: ``<root>/train|test/<emotion>/*.jpg``;
- ``rafdb_basic``: RAF-DB basic as released, ``basic/EmoLabel/list_patition_label.txt`` with images
  at ``basic/Image/aligned/<stem>_aligned.jpg`` (or ``basic/Image/original/<name>``);
- ``rafdb_folder``: the common re-packaging ``DATASET/train|test/<1..7>/*.jpg`` (or, given as the
  kind, a RAF-DB copy re-sorted into emotion-named folders: it is labelled RAF-DB, not FER-2013);
- ``custom``: ``<root>/<emotion>/*.jpg`` (e.g. photos collected from Pexels), the unseen domain.

Every image is read upright (its EXIF orientation applied) and grayscale sources become 3-channel
RGB. Files that are not data (``__MACOSX/``, AppleDouble ``._*``, ``.DS_Store``, ``Thumbs.db``, other
hidden files) are skipped everywhere and counted in ``dataset.junk``. csv files may start with a
UTF-8 byte-order mark. ``detect_layout_reason`` says which layout was chosen and why. Bad input raises a specific ``DatasetError`` naming the
file and line; with ``skip_bad=True`` bad items are skipped and counted in ``dataset.skipped``.
Labels a task deliberately leaves out (FER-2013 'disgust' in Phase 1) are counted in
``dataset.excluded``, never errors.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from emobench_common.errors import EmobenchError
from training.images import IMAGE_SUFFIXES, FaceCrop, junk_reason, open_upright
from training.labels import (
    FER2013_IDS,
    RAFDB_IDS,
    UnknownEmotionError,
    canonical_emotion,
    is_emotion,
    resolve_classes,
)

log = logging.getLogger(__name__)

FER_PIXELS = 48 * 48
FER_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
DATASET_KINDS = ("auto", "fer2013_csv", "fer2013_folder", "rafdb_basic", "rafdb_folder", "custom")


class DatasetError(EmobenchError):
    """Base class for dataset problems."""


class DatasetNotFoundError(DatasetError):
    """The dataset root (or a file the layout requires) does not exist."""


class DatasetLayoutError(DatasetError):
    """The root exists but holds none of the layouts emobench reads."""


class LabelParseError(DatasetError):
    """A label-file line or csv row that does not parse."""


class UnknownLabelError(DatasetError):
    """A label outside the dataset's mapping."""


class MissingImageError(DatasetError):
    """An image the label file lists is absent."""


class CorruptImageError(DatasetError):
    """A file that is not a decodable image."""


class PixelStringError(DatasetError):
    """A FER-2013 pixel string of the wrong length or with values outside 0..255."""


class EmptyClassError(DatasetError):
    """A class of the task has no images in this split."""


@dataclass(frozen=True)
class Sample:
    """One image: a stable id (relative path or ``file#Lline``), where to read it, its label index."""

    image_id: str
    label: int
    path: Path | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    crop: FaceCrop | None = None  # set by training.faces.attach_face_crops: read the face, not the scene
    crop_size: int | None = None


@dataclass
class _Collector:
    """Accumulates samples, skipped and excluded items while a layout is parsed."""

    class_names: tuple[str, ...]
    skip_bad: bool
    samples: list[Sample] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)
    junk: Counter = field(default_factory=Counter)

    def bad(self, error: DatasetError) -> None:
        if not self.skip_bad:
            raise error
        log.warning("skipping: %s", error.message)
        self.skipped.append(error.message)

    def add(self, emotion: str, sample_kwargs: dict[str, Any]) -> None:
        if emotion not in self.class_names:
            self.excluded[emotion] += 1
            return
        self.samples.append(Sample(label=self.class_names.index(emotion), **sample_kwargs))


class EmotionDataset(Dataset):
    """A list of labelled face images with a transform; ``dataset[i] -> (image, label)``.

    Attributes:
        kind: the layout read (one of ``DATASET_KINDS`` but 'auto').
        root: the dataset root.
        split: the split read ('train', 'val', 'test' or 'all').
        class_names: the task's classes; labels index into it.
        samples: one ``Sample`` per image.
        skipped: messages for items skipped under ``skip_bad``.
        excluded: per emotion, items whose label the task leaves out.
        junk: per kind ('__MACOSX', 'AppleDouble ._*', '.DS_Store', 'Thumbs.db', 'hidden'...), the
            files and folders skipped as not being data.
        layout_reason: why this layout was read (detected from what, or given by the user).
        face_scan: set when faces are cropped on the fly (``training.faces.attach_face_crops``).
    """

    def __init__(
        self,
        *,
        kind: str,
        root: Path,
        split: str,
        class_names: tuple[str, ...],
        samples: list[Sample],
        skipped: list[str] | None = None,
        excluded: Counter | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        junk: Counter | None = None,
        layout_reason: str = "",
    ) -> None:
        self.kind = kind
        self.root = root
        self.split = split
        self.class_names = class_names
        self.samples = samples
        self.skipped = skipped or []
        self.excluded = excluded or Counter()
        self.transform = transform
        self.junk = junk or Counter()
        self.layout_reason = layout_reason
        self.face_scan: Any = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def image_ids(self) -> list[str]:
        return [s.image_id for s in self.samples]

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order (zero for a class with none)."""
        counts = Counter(s.label for s in self.samples)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        text = f"{self.kind} {self.root} [{self.split}]: {len(self)} images ({counts})"
        if self.excluded:
            text += "; excluded by the task: " + ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items()))
        if self.skipped:
            text += f"; skipped as bad: {len(self.skipped)}"
        if self.junk:
            text += f"; skipped as not data: {sum(self.junk.values())}"
        if self.face_scan is not None:
            text += f"; {self.face_scan.summary()}"
        return text

    def load_image(self, index: int) -> Image.Image:
        """The RGB image of sample ``index``.

        Raises:
            CorruptImageError: the file cannot be decoded.
            MissingImageError: the file disappeared since the dataset was read.
        """
        return _load_sample(self.samples[index])

    def __getitem__(self, index: int):
        image = self.load_image(index)
        label = self.samples[index].label
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        return f"EmotionDataset({self.summary()})"


def _load_sample(sample: Sample) -> Image.Image:
    if sample.pixels is not None:
        image = Image.fromarray(sample.pixels, mode="L").convert("RGB")
    else:
        image = _open(sample)
    return image if sample.crop is None else sample.crop.apply(image, sample.crop_size)


def _open(sample: Sample) -> Image.Image:
    assert sample.path is not None
    try:
        return open_upright(sample.path)
    except FileNotFoundError as exc:
        raise MissingImageError(f"image {sample.path} is missing") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(
            f"{sample.path} is not a decodable image ({exc})",
            hint="replace or delete the file, or pass --skip-bad to skip unreadable images",
        ) from exc


def _check_decodes(collector: _Collector, path: Path) -> bool:
    try:
        _load_sample(Sample(image_id=str(path), label=0, path=path))
        return True
    except DatasetError as exc:
        collector.bad(exc)
        return False


def _entries(folder: Path, junk: Counter) -> list[Path]:
    """The entries of ``folder`` that may be data, sorted; the others are counted in ``junk``."""
    kept = []
    for p in sorted(folder.iterdir()):
        reason = junk_reason(p.name)
        if reason:
            junk[reason] += 1
        else:
            kept.append(p)
    return kept


def _list_images(folder: Path, junk: Counter) -> list[Path]:
    return [p for p in _entries(folder, junk) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- layouts


def _read_fer2013_csv(csv_path: Path, split: str, col: _Collector) -> None:
    wanted = {split} if split != "all" else set(FER_USAGE_TO_SPLIT.values())
    try:
        # utf-8-sig: a csv re-saved by Excel or Notepad starts with a byte-order mark, which plain
        # utf-8 would glue to the first header name ('\ufeffemotion')
        fh = open(csv_path, newline="", encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"FER-2013 csv {csv_path} does not exist") from exc
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration as exc:
            raise LabelParseError(f"{csv_path}: the file is empty; expected the header 'emotion,pixels,Usage'") from exc
        except (csv.Error, UnicodeDecodeError) as exc:
            raise LabelParseError(f"{csv_path}, line 1: not a csv file ({exc})") from exc
        header = [h.strip() for h in header]
        missing = {"emotion", "pixels", "Usage"} - set(header)
        if missing:
            raise LabelParseError(
                f"{csv_path}, line 1: header {header} lacks column(s) {sorted(missing)}",
                hint="the original fer2013.csv starts with 'emotion,pixels,Usage'",
            )
        i_emotion, i_pixels, i_usage = (header.index(c) for c in ("emotion", "pixels", "Usage"))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                col.bad(LabelParseError(f"{csv_path}, line {reader.line_num}: unreadable row ({exc})"))
                continue
            line = reader.line_num
            where = f"{csv_path}, line {line}"
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                col.bad(LabelParseError(f"{where}: expected {len(header)} fields, got {len(row)}"))
                continue
            usage = row[i_usage].strip()
            if usage not in FER_USAGE_TO_SPLIT:
                col.bad(LabelParseError(f"{where}: Usage {usage!r} is not one of {sorted(FER_USAGE_TO_SPLIT)}"))
                continue
            try:
                emotion_id = int(row[i_emotion])
            except ValueError:
                col.bad(LabelParseError(f"{where}: emotion {row[i_emotion]!r} is not an integer"))
                continue
            if emotion_id not in FER2013_IDS:
                col.bad(UnknownLabelError(f"{where}: emotion id {emotion_id} is outside FER-2013's 0..6"))
                continue
            try:
                values = np.array(row[i_pixels].split(), dtype=np.int64)
            except OverflowError:
                col.bad(PixelStringError(f"{where}: pixel values must lie in 0..255"))
                continue
            except ValueError:
                col.bad(PixelStringError(f"{where}: pixels hold a value that is not an integer"))
                continue
            if values.size != FER_PIXELS:
                col.bad(PixelStringError(f"{where}: {values.size} pixel values, expected {FER_PIXELS} (48x48)"))
                continue
            if values.min() < 0 or values.max() > 255:
                col.bad(PixelStringError(f"{where}: pixel values must lie in 0..255"))
                continue
            if FER_USAGE_TO_SPLIT[usage] not in wanted:
                continue
            col.add(
                FER2013_IDS[emotion_id],
                {"image_id": f"{csv_path.name}#L{line}", "pixels": values.astype(np.uint8).reshape(48, 48)},
            )


def _read_emotion_folders(base: Path, root: Path, col: _Collector, *, decode: bool, numeric: bool = False) -> None:
    """``base/<emotion>/*.jpg`` (or ``base/<1..7>/`` with RAF-DB ids when ``numeric``; RAF-DB copies
    re-sorted into emotion-named folders are read by name too)."""
    for folder in (p for p in _entries(base, col.junk) if p.is_dir()):
        if numeric and not folder.name.isdigit() and is_emotion(folder.name):
            emotion = canonical_emotion(folder.name)
        elif numeric:
            try:
                emotion = RAFDB_IDS[int(folder.name)]
            except (ValueError, KeyError):
                col.bad(UnknownLabelError(f"{folder}: folder name {folder.name!r} is not a RAF-DB label 1..7"))
                continue
        else:
            try:
                emotion = canonical_emotion(folder.name)
            except UnknownEmotionError:
                col.bad(UnknownLabelError(
                    f"{folder}: folder name {folder.name!r} is not an emotion",
                    hint="name class folders anger, fear, happy, sad, surprise, neutral, disgust",
                ))
                continue
        for path in _list_images(folder, col.junk):
            if decode and not _check_decodes(col, path):
                continue
            col.add(emotion, {"image_id": _rel(path, root), "path": path})


def _read_rafdb_basic(root: Path, split: str, col: _Collector, *, decode: bool, image_variant: str) -> None:
    basic = root / "basic" if (root / "basic").is_dir() else root
    label_file = basic / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise DatasetNotFoundError(f"RAF-DB label file {label_file} does not exist")
    aligned_dir = basic / "Image" / "aligned"
    original_dir = basic / "Image" / "original"
    try:
        # split on "\n" only (read_text already turned \r\n and \r into it): splitlines() would also
        # break at form feeds and Unicode separators, and the line numbers in errors would be wrong
        lines = label_file.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise LabelParseError(f"{label_file}: not a text file ({exc})") from exc
    for line_no, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        where = f"{label_file}, line {line_no}"
        parts = text.split()
        if len(parts) != 2:
            col.bad(LabelParseError(f"{where}: expected '<name>.jpg <label>', got {text!r}"))
            continue
        name, label_text = parts
        prefix = name.split("_", 1)[0]
        if prefix not in ("train", "test") or "/" in name or "\\" in name or name.startswith("."):
            col.bad(LabelParseError(f"{where}: image name {name!r} must look like train_00001.jpg or test_0001.jpg"))
            continue
        try:
            label_id = int(label_text)
        except ValueError:
            col.bad(LabelParseError(f"{where}: label {label_text!r} is not an integer"))
            continue
        if label_id not in RAFDB_IDS:
            col.bad(UnknownLabelError(f"{where}: label {label_id} is outside RAF-DB's 1..7"))
            continue
        if split != "all" and prefix != ("train" if split == "train" else "test"):
            continue
        stem = Path(name).stem
        candidates = []
        if image_variant in ("auto", "aligned"):
            candidates.append(aligned_dir / f"{stem}_aligned.jpg")
        if image_variant in ("auto", "original"):
            candidates.append(original_dir / name)
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            col.bad(MissingImageError(
                f"{where}: image for {name} is missing (looked for {', '.join(str(c) for c in candidates)})"
            ))
            continue
        if decode and not _check_decodes(col, path):
            continue
        col.add(RAFDB_IDS[label_id], {"image_id": _rel(path, root), "path": path})


# --------------------------------------------------------------------------- detection and factory


def detect_layout(root: Path) -> str:
    """Which layout ``root`` holds (see ``detect_layout_reason`` for why).

    Raises:
        DatasetNotFoundError: the root does not exist.
        DatasetLayoutError: none of the supported layouts is there.
    """
    return detect_layout_reason(root)[0]


def detect_layout_reason(root: Path) -> tuple[str, str]:
    """Which layout ``root`` holds, and the evidence, e.g. ``("rafdb_folder", "DATASET/train/ has
    folders named 1..7 (RAF-DB label ids)")``. Files that are not data (``__MACOSX``, ``._*``...) are
    ignored.

    Raises:
        DatasetNotFoundError: the root does not exist.
        DatasetLayoutError: none of the supported layouts is there.
    """
    if not root.exists():
        raise DatasetNotFoundError(
            f"dataset root {root} does not exist",
            hint="give the folder that holds the dataset, or run `emobench data sample --out DIR` for sample data",
        )
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "fer2013_csv", f"{root.name} is a csv file (FER-2013's emotion,pixels,Usage)"
        raise DatasetLayoutError(f"{root} is a file, not a dataset folder or fer2013.csv")
    if (root / "fer2013.csv").is_file():
        return "fer2013_csv", "fer2013.csv is in the folder"
    for label_dir in ("basic/EmoLabel", "EmoLabel"):
        if (root / label_dir).is_dir():
            return "rafdb_basic", f"{label_dir}/ holds RAF-DB's label file"
    junk: Counter = Counter()
    raf_ids = {str(i) for i in RAFDB_IDS}
    for base in (root / "DATASET", root):
        train = base / "train"
        if train.is_dir() and any(p.name in raf_ids for p in _entries(train, junk) if p.is_dir()):
            return "rafdb_folder", f"{_rel(train, root)}/ has folders named 1..7 (RAF-DB label ids)"
    if (root / "train").is_dir():
        return "fer2013_folder", ("train/ has emotion-named folders (FER-2013 image copies are sorted so; "
                                  "for a RAF-DB copy sorted so, say --kind rafdb_folder)")
    subdirs = [p.name for p in _entries(root, junk) if p.is_dir()]
    if subdirs and all(is_emotion(n) for n in subdirs):
        return "custom", f"every folder is an emotion ({', '.join(subdirs[:7])}) and there is no train/ split"
    raise DatasetLayoutError(
        f"{root} holds no dataset layout emobench reads (found: {sorted(subdirs)[:8] or 'no folders'})",
        hint="expected fer2013.csv, basic/EmoLabel/list_patition_label.txt (RAF-DB), DATASET/train/<1..7>/, "
        "train|test/<emotion>/ (FER-2013 images) or <emotion>/ folders (custom photos)",
    )


def create_dataset(
    root: str | os.PathLike[str],
    *,
    kind: str = "auto",
    split: str = "train",
    class_names: Sequence[str] | None = None,
    transform: Callable[[Image.Image], Any] | None = None,
    skip_bad: bool = False,
    verify_images: bool = False,
    allow_empty_classes: bool = False,
    image_variant: str = "auto",
    faces: bool | Any = False,
) -> EmotionDataset:
    """Read a dataset from a local root.

    Args:
        root: dataset folder (or the fer2013.csv file itself).
        kind: one of ``DATASET_KINDS``; 'auto' detects the layout.
        split: 'train', 'val', 'test' or 'all' (custom folders have no splits: any split reads all).
        class_names: the task's classes; default all seven canonical emotions.
        transform: applied to each PIL image.
        skip_bad: skip (and count) bad rows and undecodable images instead of raising.
        verify_images: decode every image up front so a corrupt file fails now, not mid-epoch.
        allow_empty_classes: accept a split in which a class has no images (e.g. a small unseen set).
        image_variant: RAF-DB basic images, 'aligned', 'original' or 'auto' (aligned when present).
        faces: crop each image to its face on the fly (True, or a ``training.faces.FacesConfig``):
            the face is found once, here; an image without one is used whole and counted in
            ``dataset.face_scan``. For photo folders; the face datasets are crops already.

    Raises:
        DatasetError: a subclass naming the file, line or folder at fault.
    """
    root = Path(root)
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    if split not in ("train", "val", "test", "all"):
        raise DatasetError(f"unknown split {split!r}; choose train, val, test or all")
    if kind == "auto":
        kind, layout_reason = detect_layout_reason(root)
    elif not root.exists():
        raise DatasetNotFoundError(f"dataset root {root} does not exist")
    else:
        layout_reason = f"given as the kind ({kind})"
    classes = resolve_classes(class_names)
    col = _Collector(class_names=classes, skip_bad=skip_bad)
    decode = verify_images or skip_bad
    effective_split = split
    if kind == "fer2013_csv":
        csv_path = root if root.is_file() else root / "fer2013.csv"
        _read_fer2013_csv(csv_path, split, col)
    elif kind == "rafdb_basic":
        _read_rafdb_basic(root, split, col, decode=decode, image_variant=image_variant)
    elif kind in ("rafdb_folder", "fer2013_folder"):
        base = root / "DATASET" if (root / "DATASET").is_dir() else root
        split_dirs = {"train": ["train"], "val": ["val", "test"], "test": ["test"], "all": ["train", "val", "test"]}
        found = [base / s for s in split_dirs[split] if (base / s).is_dir()]
        if split == "val" and found:
            found = found[:1]
            effective_split = found[0].name
        if not found:
            raise DatasetLayoutError(f"{base} has no {split!r} folder (expected {base}/{split_dirs[split][0]}/)")
        for folder in found:
            _read_emotion_folders(folder, root, col, decode=decode, numeric=(kind == "rafdb_folder"))
    else:  # custom
        _read_emotion_folders(root, root, col, decode=decode)
        effective_split = "all"
    dataset = EmotionDataset(
        kind=kind, root=root, split=effective_split, class_names=classes, samples=col.samples,
        skipped=col.skipped, excluded=col.excluded, transform=transform, junk=col.junk, layout_reason=layout_reason,
    )
    if not dataset.samples:
        raise EmptyClassError(f"{root} [{split}] holds no images of the classes {', '.join(classes)}")
    empty = [name for name, n in dataset.class_counts().items() if n == 0]
    if empty and not allow_empty_classes:
        raise EmptyClassError(
            f"{root} [{split}]: no images for class(es) {', '.join(empty)}",
            hint="add images for those classes, choose the task's classes explicitly, or allow empty classes",
        )
    if faces:
        from training.faces import FacesConfig, attach_face_crops

        attach_face_crops(dataset, faces if isinstance(faces, FacesConfig) else FacesConfig())
    log.info("%s", dataset.summary())
    return dataset
