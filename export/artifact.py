"""The one result type every format module returns: ``Artifact`` (with its parity and INT8 report)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Manifest/format names. ``torchscript-lite`` is the lite-interpreter (.ptl) twin of ``torchscript``.
ARTIFACT_FORMATS: tuple[str, ...] = ("torchscript", "torchscript-lite", "executorch", "onnx")
EXTENSIONS: Mapping[str, str] = {"torchscript": ".pt", "torchscript-lite": ".ptl", "executorch": ".pte", "onnx": ".onnx"}
# The file-name stem uses the format family: the lite twin differs only by its extension.
_FAMILY: Mapping[str, str] = {"torchscript-lite": "torchscript"}


def artifact_filename(arch: str, fmt: str, precision: str, mode: str | None) -> str:
    """``<arch>_<format>_<precision>[-<mode>].<ext>``, e.g. ``efficientnet_b0_executorch_int8-dynamic.pte``."""
    tag = precision if mode is None else f"{precision}-{mode}"
    return f"{arch}_{_FAMILY.get(fmt, fmt)}_{tag}{EXTENSIONS[fmt]}"


@dataclass(frozen=True)
class Parity:
    """An artifact's outputs against the eager FP32 model on the same real images."""

    images: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    eager_accuracy: float | None = None
    artifact_accuracy: float | None = None
    passed: bool = True
    threshold: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Parity:
        return Parity(**dict(d))


@dataclass(frozen=True)
class QuantReport:
    """What INT8 quantization really did, counted from the artifact (or the graph lowered into it).

    Attributes:
        method: how it was quantized, in words a user can repeat.
        layers_quantized / layers_total: weight-bearing layers (conv, linear) with INT8 weights / in all.
        by_kind: per layer kind (``conv2d``, ``conv2d-depthwise``, ``linear``) ``[quantized, total]``.
        weight_bytes_before: bytes of those layers' weights in FP32.
        weight_bytes_after: bytes the artifact stores for them (INT8 values plus scales/zero points,
            FP32 for layers left unquantized).
        size_ratio_to_fp32: file size / size of the FP32 twin (same format), when that twin was exported.
        counted_from: what was inspected to count.
    """

    method: str
    layers_quantized: int
    layers_total: int
    by_kind: Mapping[str, tuple[int, int]]
    weight_bytes_before: int
    weight_bytes_after: int
    counted_from: str
    size_ratio_to_fp32: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["by_kind"] = {k: list(v) for k, v in self.by_kind.items()}
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> QuantReport:
        d = dict(d)
        d["by_kind"] = {k: (int(v[0]), int(v[1])) for k, v in d["by_kind"].items()}
        return QuantReport(**d)


@dataclass(frozen=True)
class Artifact:
    """One exported file and everything known about it.

    ``path`` is absolute while exporting and after ``load_manifest``; the manifest stores it relative
    to its folder. ``parity`` is filled in by verification; ``quantization`` only for INT8.
    """

    format: str
    precision: str
    mode: str | None
    path: Path
    size_bytes: int
    sha256: str
    batch_size: int
    runtime: str
    export_seconds: float
    quantization: QuantReport | None = None
    parity: Parity | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.format, self.precision, self.mode)

    @property
    def label(self) -> str:
        return f"{self.format} {self.precision}" + (f"-{self.mode}" if self.mode else "")

    def with_(self, **changes: Any) -> Artifact:
        return replace(self, **changes)

    def to_dict(self, *, relative_to: Path) -> dict[str, Any]:
        """JSON for the manifest, the path relative to the manifest's folder."""
        return {
            "format": self.format,
            "precision": self.precision,
            "mode": self.mode,
            "path": self.path.relative_to(relative_to).as_posix(),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "batch_size": self.batch_size,
            "runtime": self.runtime,
            "export_seconds": self.export_seconds,
            "parity": self.parity.to_dict() if self.parity else None,
            "quantization": self.quantization.to_dict() if self.quantization else None,
            "details": dict(self.details),
        }
