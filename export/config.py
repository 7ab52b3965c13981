"""The resolved export configuration (a frozen dataclass; the CLI only fills it in)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportConfigError

FORMATS: tuple[str, ...] = ("torchscript", "executorch", "onnx")
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
INT8_MODES: tuple[str, ...] = ("dynamic", "static", "hybrid", "mixed", "qat")
CALIBRATION_OBSERVERS: tuple[str, ...] = ("auto", "minmax", "moving_average", "histogram", "percentile")
# the INT8 modes whose artifacts calibrate activation ranges on training images, per format that has them
# (each a subset of that format module's MODES["int8"]; tests/export/test_int8_calibration.py checks)
CALIBRATED_MODES: dict[str, tuple[str, ...]] = {"executorch": ("static", "hybrid", "mixed"), "onnx": ("static",)}


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how to check it.

    Attributes:
        formats: any of ``FORMATS``; ``torchscript`` writes a full ``.pt`` and a lite-interpreter ``.ptl``.
        precisions: any of ``PRECISIONS``.
        int8_modes: INT8 modes to produce, any of ``INT8_MODES`` (a format without a mode records a skip).
        batch_size: the batch dimension artifacts are exported with (1 = what a phone app runs).
        calibration_data: dataset root for static INT8 calibration (its ``calibration_split``).
        calibration_images: images drawn (evenly, deterministically) for calibration.
        calibration_split: split of ``calibration_data`` to calibrate on (the training split by default).
        eval_data: dataset root whose real images verify every artifact; ``None`` falls back to
            ``calibration_data``, then to the data root recorded in the checkpoint's config.
        eval_images: images used for verification.
        eval_split: split of ``eval_data`` (test by default; a custom folder has no splits).
        fp32_max_abs_diff: an FP32 artifact whose max |logit - eager logit| reaches this fails.
        int8_min_agreement: below this top-1 agreement with eager an INT8 artifact gets a warning.
        overwrite: replace a different export already in the output folder.
        calibration_observer: how static/mixed INT8 picks activation ranges (``CALIBRATION_OBSERVERS``,
            see ``export.calibration``); ``auto`` calibrates with each observer and keeps the one whose
            INT8 model agrees best with FP32 on the calibration images (``export.sensitivity.choose_observer``).
        target_agreement: ``mixed`` INT8 keeps the most sensitive layer groups FP32 until its top-1
            agreement with FP32 on the calibration images reaches this.
        max_fp32_layer_share: ``mixed`` never leaves more than this share of the weight layers FP32.
        max_fp32_weight_share: ... nor more than this share of the weight bytes (keeps the file small).
        sensitivity: also rank the layer groups by quantization sensitivity for ``static`` (``mixed``
            always does); the ranking goes into the artifact's details.
        equalize_depthwise: ``hybrid`` equalizes the channels around each depthwise conv before calibrating
            (``export.equalize``: exact in FP32, per-channel activation ranges emulated).
        jobs: worker processes for the export: independent (format) groups of artifacts run in parallel
            spawned processes; ``None`` = auto, min(usable cores, groups); 1 (the default) = everything in
            this process: on 2 shared cores the workers' start-up (~5 s of imports each) outweighed the
            overlap (README, Performance). How to run, not what: it never changes an artifact.
    """

    formats: tuple[str, ...] = FORMATS
    precisions: tuple[str, ...] = PRECISIONS
    int8_modes: tuple[str, ...] = ("dynamic",)
    batch_size: int = 1
    calibration_data: Path | None = None
    calibration_images: int = 128  # histogram + 128: lowest output divergence on held-out images (docs/export.md)
    calibration_split: str = "train"
    eval_data: Path | None = None
    eval_images: int = 32
    eval_split: str = "test"
    fp32_max_abs_diff: float = 1e-3
    int8_min_agreement: float = 0.9
    overwrite: bool = False
    calibration_observer: str = "auto"  # measured per model: no one observer is safe (docs/export.md)
    target_agreement: float = 0.99
    max_fp32_layer_share: float = 0.10
    max_fp32_weight_share: float = 0.03
    sensitivity: bool = False
    equalize_depthwise: bool = True
    jobs: int | None = 1

    def __post_init__(self) -> None:
        _check_choice("formats", self.formats, FORMATS)
        _check_choice("precisions", self.precisions, PRECISIONS)
        _check_choice("int8_modes", self.int8_modes, INT8_MODES, allow_empty="int8" not in self.precisions)
        for name in ("batch_size", "calibration_images", "eval_images"):
            if int(getattr(self, name)) < 1:
                raise ExportConfigError(f"export setting {name} must be at least 1, got {getattr(self, name)}")
        if self.jobs is not None and int(self.jobs) < 1:
            raise ExportConfigError(f"export setting jobs must be at least 1 (or None: auto), got {self.jobs}")
        if not 0.0 <= self.int8_min_agreement <= 1.0:
            raise ExportConfigError(f"int8_min_agreement must be in [0, 1], got {self.int8_min_agreement}")
        if self.calibration_observer not in CALIBRATION_OBSERVERS:
            raise ExportConfigError(f"unknown calibration_observer {self.calibration_observer!r}",
                                    hint=f"choose from {', '.join(CALIBRATION_OBSERVERS)}")
        for name in ("target_agreement", "max_fp32_layer_share", "max_fp32_weight_share"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ExportConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.fp32_max_abs_diff <= 0:
            raise ExportConfigError(f"fp32_max_abs_diff must be positive, got {self.fp32_max_abs_diff}")
        for split_name in ("calibration_split", "eval_split"):
            if getattr(self, split_name) not in ("train", "val", "test", "all"):
                raise ExportConfigError(f"{split_name} must be train, val, test or all")

    @property
    def needs_calibration(self) -> bool:
        """True when an INT8 artifact that calibrates activation ranges is requested for a format that has
        that mode (``CALIBRATED_MODES``): ONNX-only hybrid or mixed asks for no calibration data."""
        if "int8" not in self.precisions:
            return False
        return any(set(CALIBRATED_MODES.get(fmt, ())) & set(self.int8_modes) for fmt in self.formats)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (paths as strings) for the manifest."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


def _check_choice(name: str, values: tuple[str, ...], allowed: tuple[str, ...], *, allow_empty: bool = False) -> None:
    if isinstance(values, str) or not isinstance(values, tuple):
        raise ExportConfigError(f"export setting {name} must be a tuple of strings, got {values!r}")
    if not values and not allow_empty:
        raise ExportConfigError(f"export setting {name} is empty; choose from {', '.join(allowed)}")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ExportConfigError(
            f"unknown {name} value(s) {', '.join(unknown)}", hint=f"choose from {', '.join(allowed)}"
        )
    if len(set(values)) != len(values):
        raise ExportConfigError(f"export setting {name} lists a value twice: {', '.join(values)}")
