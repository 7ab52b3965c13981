"""The checkpoint contract: one ``.pt`` file that ``torch.load(path, weights_only=True)`` reads.

It holds only tensors and plain Python values: the format version, ``arch``, ``num_classes``,
``class_names``, ``input_size`` (C, H, W), normalisation ``mean``/``std``, ``model_kwargs``, the
model state, optimizer/scheduler state, epoch, best metric, history and the resolved config.
Export and the ablation read architecture and classes from it, never from flags.

A QAT checkpoint (``emobench train qat``, ``training.qat``) also holds ``qat`` (how it was made) and
``fp32_model_state`` (the FP32 model it started from); its ``model_state`` is the QAT graph's.

The input contract (``emobench_common.input_spec.InputSpec``) is made once here, from
``class_names``, ``input_size``, ``mean``, ``std`` and the optional ``crop_pct`` and
``interpolation`` (absent in older checkpoints: the contract's defaults).
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_bytes
from emobench_common.input_spec import InputSpec, InputSpecError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "emobench-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("arch", "num_classes", "class_names", "input_size", "mean", "std", "model_state")


class CheckpointError(EmobenchError):
    """A file that is not a readable emobench checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint. ``raw`` keeps every stored field (optimizer state, history, config...)."""

    path: Path
    arch: str
    input_spec: InputSpec
    model_state: Mapping[str, torch.Tensor]
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epoch: int = 0
    best_metric: float | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.input_spec.class_names

    @property
    def num_classes(self) -> int:
        return self.input_spec.num_classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return self.input_spec.input_shape

    @property
    def mean(self) -> tuple[float, ...]:
        return self.input_spec.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.input_spec.std

    @property
    def image_size(self) -> int:
        return self.input_spec.image_size

    @property
    def qat(self) -> Mapping[str, Any] | None:
        """How a QAT run made this checkpoint (``training.qat``), or None for an FP32 checkpoint."""
        value = self.raw.get("qat")
        return value if isinstance(value, Mapping) else None

    def build_model(self) -> nn.Module:
        """The FP32 model with the stored weights, in eval mode, on the CPU.

        For a QAT checkpoint that is the FP32 model the QAT run started from (its teacher: the reference
        its INT8 model must agree with); ``build_qat_model`` gives the QAT graph.
        """
        state = self.raw["fp32_model_state"] if self.qat is not None else self.model_state
        return self._build(state)

    def build_qat_model(self) -> Any:
        """A QAT checkpoint's trained ``training.qat.QatModel`` (eval mode); ``convert()`` it to export INT8.

        Raises:
            CheckpointError: not a QAT checkpoint, or its QAT state does not fit.
        """
        from training.qat import QatError, build_qat_model

        if self.qat is None:
            raise CheckpointError(f"{self.path} is not a QAT checkpoint",
                                  hint="make one with `emobench train qat --init-from RUN`")
        try:
            model = build_qat_model(self.build_model(), self.input_size, self.model_state, source=str(self.path))
        except QatError as exc:
            raise CheckpointError(exc.message, hint=exc.hint) from exc
        return model.eval()

    def _build(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        from training.models import create_model

        try:
            model = create_model(self.arch, num_classes=self.num_classes, pretrained=False, **dict(self.model_kwargs))
        except EmobenchError as exc:
            raise CheckpointError(f"{self.path}: cannot build arch {self.arch!r}: {exc.message}", hint=exc.hint) from exc
        except (TypeError, ValueError) as exc:  # timm refuses an unknown or ill-typed model_kwargs entry
            raise CheckpointError(f"{self.path}: field model_kwargs {dict(self.model_kwargs)} does not fit "
                                  f"{self.arch} ({exc})") from exc
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{self.path}: the stored weights do not fit {self.arch} with {self.num_classes} classes ({exc})"
            ) from exc
        return model.eval()


def make_checkpoint_dict(
    *,
    model: nn.Module,
    arch: str,
    class_names: Sequence[str],
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    model_kwargs: Mapping[str, Any] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    scaler_state: Mapping[str, Any] | None = None,
    epoch: int = 0,
    best_metric: float | None = None,
    best_metric_name: str | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict (plain values only, so ``weights_only=True`` can read it).

    ``crop_pct`` and ``interpolation`` are stored only when given (else readers use the input
    contract's defaults).
    """
    inner = getattr(model, "module", None)  # DistributedDataParallel / DataParallel wrap the model
    state = (inner if isinstance(inner, nn.Module) else model).state_dict()
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),  # TorchVersion would pickle a class
        "arch": arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input_size": [int(v) for v in input_size],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "model_kwargs": dict(model_kwargs or {}),
        "model_state": {k: v.detach().cpu() for k, v in state.items()},
        "optimizer_state": optimizer_state,
        "scheduler_state": scheduler_state,
        "scaler_state": scaler_state,
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "best_metric_name": best_metric_name,
        "history": [dict(h) for h in history],
        "config": dict(config or {}),
    }
    if crop_pct is not None:
        ckpt["crop_pct"] = float(crop_pct)
    if interpolation is not None:
        ckpt["interpolation"] = str(interpolation)
    if extra:
        ckpt.update(extra)
    return ckpt


def save_checkpoint(path: str | os.PathLike[str], ckpt: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a truncated checkpoint."""
    buf = io.BytesIO()
    torch.save(dict(ckpt), buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint_dict(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with every failure turned into a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} was refused: it holds pickled Python objects, and emobench loads checkpoints with "
            f"weights_only=True so that a file cannot run code ({str(exc).splitlines()[0][:200]})",
            hint="re-save it as a plain dict of tensors and values, or retrain with emobench",
        ) from exc
    except Exception as exc:  # torch.load on arbitrary bytes raises many types (IndexError, EOFError, BadZipFile...)
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt: {type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not an emobench checkpoint dict")
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# field -> (what it must be, check); absent optional fields are not checked
_FIELD_TYPES: dict[str, tuple[str, Any]] = {
    "arch": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "num_classes": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "class_names": ("a list of non-empty strings",
                    lambda v: isinstance(v, list | tuple) and all(isinstance(c, str) and c for c in v)),
    "input_size": ("[channels, height, width] integers >= 1",
                   lambda v: isinstance(v, list | tuple) and all(_is_int(x) and x >= 1 for x in v)),
    "mean": ("a list of finite numbers", lambda v: isinstance(v, list | tuple) and all(_is_finite(x) for x in v)),
    "std": ("a list of finite numbers > 0",
            lambda v: isinstance(v, list | tuple) and all(_is_finite(x) and x > 0 for x in v)),
    "crop_pct": ("a number in (0, 1]", lambda v: _is_finite(v) and 0 < v <= 1),
    "interpolation": ("bilinear, bicubic or nearest", lambda v: v in ("bilinear", "bicubic", "nearest")),
    "model_state": ("a state dict of tensors", lambda v: isinstance(v, dict)
                    and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())),
    "model_kwargs": ("a dict (or null)", lambda v: v is None or isinstance(v, dict)),
    "epoch": ("an integer >= 0 (or null)", lambda v: v is None or (_is_int(v) and v >= 0)),
    "best_metric": ("a finite number (or null)", lambda v: v is None or _is_finite(v)),
    "config": ("a dict (or null)", lambda v: v is None or isinstance(v, dict)),
    "fp32_model_state": ("a state dict of tensors", lambda v: isinstance(v, dict)
                         and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())),
    "qat": ("a dict describing the QAT run", lambda v: isinstance(v, dict)),
}


def _check_field_types(path: Path, obj: Mapping[str, Any]) -> None:
    for name, (expected, ok) in _FIELD_TYPES.items():
        if name in obj and not ok(obj[name]):
            raise CheckpointError(f"{path}: field {name} must be {expected}, not {_short_repr(obj[name])}",
                                  hint="the file was not written by `emobench train`, or was edited")


def _short_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, torch.Tensor) else f"a tensor of shape {tuple(value.shape)}"
    return text if len(text) <= 80 else text[:77] + "..."


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate an emobench checkpoint.

    Raises:
        CheckpointError: missing, truncated, pickled objects, another format, or missing fields.
    """
    path = Path(path)
    obj = load_checkpoint_dict(path, map_location=map_location)
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not an emobench checkpoint (no format={CHECKPOINT_FORMAT!r} field)",
            hint="export and evaluation need a checkpoint written by `emobench train`",
        )
    version = obj.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not one this emobench reads "
                              f"(1..{CHECKPOINT_VERSION})")
    missing = [k for k in _REQUIRED if k not in obj]
    if "qat" in obj and "fp32_model_state" not in obj:
        missing.append("fp32_model_state (a QAT checkpoint's FP32 reference)")
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks field(s) {', '.join(missing)}")
    _check_field_types(path, obj)
    class_names = tuple(obj["class_names"])
    input_size = tuple(obj["input_size"])
    mean = tuple(float(v) for v in obj["mean"])
    std = tuple(float(v) for v in obj["std"])
    num_classes = obj["num_classes"]
    if len(input_size) != 3 or len(mean) != input_size[0] or len(std) != input_size[0]:
        raise CheckpointError(f"{path}: input_size {input_size} and mean/std lengths disagree")
    if num_classes != len(class_names):
        raise CheckpointError(f"{path}: num_classes={num_classes} but {len(class_names)} class names")
    if len(set(class_names)) != len(class_names):
        raise CheckpointError(f"{path}: field class_names lists a class twice: {list(class_names)}")
    try:
        spec = InputSpec.from_dict({**obj, "input_shape": input_size}, source=str(path))
    except InputSpecError as exc:
        raise CheckpointError(exc.message, hint="the file was not written by `emobench train`, or was edited") from exc
    return Checkpoint(
        path=path,
        arch=str(obj["arch"]),
        input_spec=spec,
        model_state=obj["model_state"],
        model_kwargs=obj.get("model_kwargs") or {},
        epoch=obj.get("epoch") or 0,
        best_metric=obj.get("best_metric"),
        config=obj.get("config") or {},
        raw=obj,
    )
