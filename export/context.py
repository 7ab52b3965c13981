"""What every format module receives: the checkpoint, its eager model and the data to calibrate with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.config import ExportConfig
from export.data import ImageSet
from export.errors import ExportConfigError

if TYPE_CHECKING:
    import torch

    from training.checkpoint import Checkpoint


@dataclass
class ExportContext:
    """Shared, read-mostly inputs of one export run.

    ``cache`` lets a format reuse an intermediate it built for an earlier artifact of the same run
    (e.g. the FP32 ONNX graph that both INT8 ONNX artifacts start from); it lives in ``staging_dir``.
    """

    checkpoint: Checkpoint
    model: torch.nn.Module
    config: ExportConfig
    staging_dir: Path
    calibration: ImageSet | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.checkpoint.arch

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.checkpoint.input_spec.batch_shape(self.config.batch_size)

    def example_input(self) -> torch.Tensor:
        """A batch for tracing/exporting: real images when any are loaded (shapes are all that matter)."""
        import torch

        if self.calibration is not None and len(self.calibration) >= self.config.batch_size:
            return torch.from_numpy(self.calibration.images[: self.config.batch_size].copy())
        return torch.zeros(self.input_shape)

    def calibration_batches(self) -> list[torch.Tensor]:
        """The calibration images as batches of ``batch_size`` (the last one padded by repetition).

        Raises:
            ExportConfigError: no calibration data was given (static INT8 needs it).
        """
        import torch

        if self.calibration is None:
            raise ExportConfigError(
                "static INT8 needs calibration images and none were given",
                hint="pass --calibration-data ROOT (a dataset folder, e.g. the training data)",
            )
        images = torch.from_numpy(self.calibration.images.copy())
        b = self.config.batch_size
        batches = []
        for start in range(0, images.shape[0], b):
            chunk = images[start:start + b]
            if chunk.shape[0] < b:  # pad by repeating images so every batch has the exported shape
                reps = -(-b // images.shape[0])
                chunk = torch.cat([chunk, images.repeat(reps, 1, 1, 1)[: b - chunk.shape[0]]])
            batches.append(chunk)
        return batches
