"""Transform presets (keyword-only classes, sizes from config).

Train: random resized crop, horizontal flip, rotation, colour jitter, random erasing.
Eval: resize, center crop, normalize. ``create_eval_transform(spec)`` builds it from the input
contract (``emobench_common.input_spec.InputSpec``) the checkpoint makes and the manifest carries;
evaluation, export verification and the ablation all use it, so every runtime sees the same input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from emobench_common.input_spec import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, InputSpec, InputSpecError

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
    48x48 crops are already tight around the face. Build it with :func:`create_eval_transform`
    from an ``InputSpec`` wherever a model's input is made.
    """

    def __init__(
        self,
        *,
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_pct: float = DEFAULT_CROP_PCT,
        interpolation: str = DEFAULT_INTERPOLATION,
    ) -> None:
        resize = int(math.floor(image_size / crop_pct))
        self.transform = T.Compose(
            [
                T.Resize(resize, interpolation=T.InterpolationMode(interpolation), antialias=True),
                T.CenterCrop(image_size),
                T.ToTensor(),
                T.Normalize(list(mean), list(std)),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def __repr__(self) -> str:
        return f"EvalTransform({self.transform})"


def create_eval_transform(spec: InputSpec) -> EvalTransform:
    """The one preprocessing every consumer of a model uses: the contract's size, crop, filter and normalisation.

    Raises:
        InputSpecError: the contract is not square (emobench makes square centre crops).
    """
    _, height, width = spec.input_shape
    if height != width:
        raise InputSpecError(f"input {height}x{width} is not square; emobench preprocesses square centre crops")
    return EvalTransform(image_size=height, mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct,
                         interpolation=spec.interpolation)
