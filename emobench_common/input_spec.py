"""The input contract: what a model expects, made once from the checkpoint and carried with it.

``InputSpec`` says how an image becomes the tensor a model was trained on: the class names in
output order, the input shape (C, H, W) and layout, the colour order, the pixel value range before
normalisation, mean and std, the centre-crop fraction and the resize interpolation. Training's
checkpoint makes it (``Checkpoint.input_spec``), export writes it into ``manifest.json`` (the
``input`` object plus the top-level ``class_names``), the ablation plan stores it, and every
consumer (the inputs of the ablation, evaluation, verification images) builds its preprocessing
from it with ``training.transforms.create_eval_transform``: one transform, like timm's
``resolve_data_config`` -> ``create_transform``.

A manifest written before the contract carried ``crop_pct``, ``interpolation`` or a numeric
``value_range`` is read with the values every consumer used then (:data:`DEFAULT_CROP_PCT`,
:data:`DEFAULT_INTERPOLATION`, :data:`DEFAULT_VALUE_RANGE`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emobench_common.errors import EmobenchError

DEFAULT_CROP_PCT = 1.0
"""Keep the whole face: RAF-DB's aligned images and FER-2013's 48x48 crops are already tight around it."""
DEFAULT_INTERPOLATION = "bilinear"
DEFAULT_VALUE_RANGE: tuple[float, float] = (0.0, 1.0)
"""RGB bytes scaled to 0..1 (``ToTensor``) before ``(x - mean) / std`` per channel."""
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
LAYOUTS = ("NCHW",)
COLORS = ("RGB",)
INPUT_NAME = "input"
DTYPE = "float32"


class InputSpecError(EmobenchError):
    """An input contract with a missing or impossible field."""


@dataclass(frozen=True)
class InputSpec:
    """How images become a model's input, and what its outputs mean.

    Attributes:
        class_names: class of each output logit, in order.
        input_shape: (channels, height, width) of one image.
        mean, std: per-channel normalisation, ``(x - mean) / std`` after scaling to ``value_range``.
        crop_pct: resize the shorter side to ``height / crop_pct``, then centre-crop ``height``.
        interpolation: resize filter: bilinear, bicubic or nearest.
        layout: tensor layout of a batch; only NCHW.
        color: channel order; only RGB.
        value_range: (low, high) the 0..255 pixel values are scaled to before normalisation.
    """

    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = DEFAULT_INTERPOLATION
    layout: str = "NCHW"
    color: str = "RGB"
    value_range: tuple[float, float] = DEFAULT_VALUE_RANGE

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InputSpecError(f"input contract: {problem}")

    def _problem(self) -> str | None:
        if not self.class_names or not all(isinstance(c, str) and c for c in self.class_names):
            return f"field class_names must be non-empty strings, got {list(self.class_names)}"
        if len(set(self.class_names)) != len(self.class_names):
            return f"field class_names lists a class twice: {list(self.class_names)}"
        if len(self.input_shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in self.input_shape):
            return f"field input_shape must be [channels, height, width] integers >= 1, got {list(self.input_shape)}"
        channels = self.input_shape[0]
        if len(self.mean) != channels or not all(math.isfinite(v) for v in self.mean):
            return f"field mean must hold {channels} finite numbers (one per channel), got {list(self.mean)}"
        if len(self.std) != channels or not all(math.isfinite(v) and v > 0 for v in self.std):
            return f"field std must hold {channels} finite numbers > 0 (one per channel), got {list(self.std)}"
        if not (math.isfinite(self.crop_pct) and 0 < self.crop_pct <= 1):
            return f"field crop_pct must be in (0, 1], got {self.crop_pct}"
        if self.interpolation not in INTERPOLATIONS:
            return f"field interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
        if self.layout not in LAYOUTS:
            return f"field layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
        if self.color not in COLORS:
            return f"field color must be one of {', '.join(COLORS)}, got {self.color!r}"
        low, high = self.value_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            return f"field value_range must be (low, high) with low < high, got {list(self.value_range)}"
        return None

    @property
    def image_size(self) -> int:
        """Height (= width for the square crops emobench makes) in pixels."""
        return self.input_shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def batch_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """Shape of a batch of ``batch_size`` images in this contract's layout."""
        c, h, w = self.input_shape
        return (batch_size, c, h, w)

    # --- serialised forms ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (how the ablation plan stores it)."""
        return {"class_names": list(self.class_names), "input_shape": list(self.input_shape),
                "mean": list(self.mean), "std": list(self.std), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "layout": self.layout, "color": self.color,
                "value_range": list(self.value_range)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "input contract") -> InputSpec:
        """Inverse of :meth:`to_dict`; optional fields missing (older files) get the defaults.

        Raises:
            InputSpecError: a required field is missing or a field is malformed (naming ``source``).
        """
        try:
            return cls(
                class_names=tuple(str(c) for c in data["class_names"]),
                input_shape=_shape3(data["input_shape"]),
                mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                crop_pct=float(data.get("crop_pct", DEFAULT_CROP_PCT)),
                interpolation=str(data.get("interpolation", DEFAULT_INTERPOLATION)),
                layout=str(data.get("layout", "NCHW")), color=str(data.get("color", "RGB")),
                value_range=_value_range(data.get("value_range")),
            )
        except InputSpecError as exc:
            raise InputSpecError(f"{source}: {exc.message}", hint=exc.hint) from None
        except KeyError as exc:
            raise InputSpecError(f"{source}: field {exc.args[0]} is missing") from None
        except (TypeError, ValueError) as exc:
            raise InputSpecError(f"{source}: malformed field ({type(exc).__name__}: {exc})") from None

    def to_manifest_input(self, batch_size: int) -> dict[str, Any]:
        """The manifest's ``input`` object (``class_names`` sits at the manifest's top level)."""
        return {"name": INPUT_NAME, "shape": list(self.batch_shape(batch_size)), "dtype": DTYPE,
                "layout": self.layout, "color": self.color, "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "value_range": list(self.value_range)}

    @classmethod
    def from_manifest_input(cls, data: Mapping[str, Any], class_names: Sequence[str], *,
                            source: str = "manifest") -> InputSpec:
        """Read a manifest's ``input`` object; fields an older export did not write get the old defaults.

        Raises:
            InputSpecError: a malformed field, or a batch shape that is not 4-D (naming ``source``).
        """
        shape = list(data.get("shape", ()))
        if len(shape) != 4:
            raise InputSpecError(f"{source}: field input/shape must be [batch, channels, height, width], "
                                 f"got {shape}")
        return cls.from_dict({**data, "class_names": list(class_names), "input_shape": shape[1:]},
                             source=source)


def _shape3(value: Any) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in value)
    return (c, h, w)


def _value_range(value: Any) -> tuple[float, float]:
    # manifests before the contract wrote a sentence here ("RGB scaled to 0..1, then ..."): the default
    if value is None or isinstance(value, str):
        return DEFAULT_VALUE_RANGE
    low, high = (float(v) for v in value)
    return (low, high)
