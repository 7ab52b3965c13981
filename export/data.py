"""Real images for verification and calibration, preprocessed exactly as the checkpoint's input contract says."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emobench_common.input_spec import InputSpec
from export.errors import VerificationDataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSet:
    """``images`` float32 NCHW (preprocessed by the checkpoint's input contract), labels and ids."""

    images: np.ndarray
    labels: tuple[int, ...]
    image_ids: tuple[str, ...]
    root: Path
    kind: str
    split: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "kind": self.kind, "split": self.split, "images": len(self),
                "image_ids": list(self.image_ids)}


def evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them when count >= total)."""
    if count >= total:
        return list(range(total))
    return [int(i * total / count) for i in range(count)]


def load_image_set(root: Path, *, split: str, count: int, spec: InputSpec, purpose: str) -> ImageSet:
    """Read ``count`` images of ``split`` under ``root`` (evenly spread, so every class is represented).

    Raises:
        VerificationDataError: the root is missing, unreadable, or holds no images of the classes.
    """
    from training.datasets import DatasetError, create_dataset
    from training.transforms import create_eval_transform

    transform = create_eval_transform(spec)
    try:
        dataset = create_dataset(root, split=split, class_names=list(spec.class_names), transform=transform,
                                 allow_empty_classes=True)
        chosen = evenly_spaced(len(dataset), count)
        tensors, labels = zip(*(dataset[i] for i in chosen), strict=True)
    except DatasetError as exc:
        raise VerificationDataError(f"{purpose} data {root} [{split}]: {exc.message}", hint=exc.hint) from exc
    images = np.stack([t.numpy() for t in tensors]).astype(np.float32)
    if len(chosen) < count:
        log.warning("%s data %s [%s] has only %d images (asked for %d)", purpose, root, split, len(chosen), count)
    return ImageSet(images=images, labels=tuple(int(v) for v in labels),
                    image_ids=tuple(dataset.samples[i].image_id for i in chosen),
                    root=Path(root), kind=dataset.kind, split=dataset.split)
