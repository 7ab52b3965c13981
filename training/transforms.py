"""Transform presets (keyword-only classes, sizes from config).

Train: random resized crop, horizontal flip, rotation, colour jitter, random erasing.
Eval: resize, center crop, normalize. Exported artifacts and the ablation use ``EvalTransform``
with the size and normalisation recorded in the checkpoint, so every runtime sees the same input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class TrainTransform:
    """Augmentations for training."""

    def __init__(
        self,
        *,
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: tuple[float, float] = (0.8, 1.0),
        hflip_prob: float = 0.5,
        rotation_deg: float = 10.0,
        color_jitter: float = 0.2,
        random_erasing_prob: float = 0.25,
    ) -> None:
        steps: list = [T.RandomResizedCrop(image_size, scale=scale, antialias=True)]
        if hflip_prob > 0:
            steps.append(T.RandomHorizontalFlip(hflip_prob))
        if rotation_deg > 0:
            steps.append(T.RandomRotation(rotation_deg))
        if color_jitter > 0:
            steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
        steps += [T.ToTensor(), T.Normalize(list(mean), list(std))]
        if random_erasing_prob > 0:
            steps.append(T.RandomErasing(p=random_erasing_prob, scale=(0.02, 0.15)))
        self.transform = T.Compose(steps)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def __repr__(self) -> str:
        return f"TrainTransform({self.transform})"


class EvalTransform:
    """Deterministic preprocessing: resize to ``image_size / crop_pct``, center crop, normalize.

    ``crop_pct=1.0`` (the default) keeps the whole face: RAF-DB's aligned images and FER-2013's
    48x48 crops are already tight around the face.
    """

    def __init__(
        self,
        *,
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_pct: float = 1.0,
    ) -> None:
        resize = int(math.floor(image_size / crop_pct))
        self.transform = T.Compose(
            [
                T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                T.CenterCrop(image_size),
                T.ToTensor(),
                T.Normalize(list(mean), list(std)),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def __repr__(self) -> str:
        return f"EvalTransform({self.transform})"
