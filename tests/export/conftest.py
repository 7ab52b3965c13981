"""Export fixtures: a tiny real checkpoint (timm test_efficientnet, 64x64, all seven classes) and one
full export of it to every format x precision x mode, shared by the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.config import ExportConfig

TINY_ARCH = "test_efficientnet"
TINY_SIZE = 64


def make_tiny_checkpoint(path: Path, *, arch: str = TINY_ARCH, image_size: int = TINY_SIZE, seed: int = 0) -> Path:
    """A real emobench checkpoint of a randomly initialised timm model."""
    import torch

    from training.checkpoint import make_checkpoint_dict, save_checkpoint
    from training.labels import EMOTIONS
    from training.models import create_model

    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(EMOTIONS))
    ckpt = make_checkpoint_dict(model=model, arch=arch, class_names=EMOTIONS, input_size=(3, image_size, image_size),
                                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), epoch=3)
    return save_checkpoint(path, ckpt)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")


@pytest.fixture(scope="session")
def full_config(tiny_sample) -> ExportConfig:
    return ExportConfig(
        formats=("torchscript", "executorch", "onnx"), precisions=("fp32", "int8"), int8_modes=("dynamic", "static"),
        calibration_data=tiny_sample["rafdb"], calibration_images=8, eval_data=tiny_sample["rafdb"], eval_images=12,
    )


@pytest.fixture(scope="session")
def full_export(tmp_path_factory, tiny_checkpoint, full_config):
    """Every format x precision x mode of the tiny checkpoint (about 45 s on 2 cores), exported once."""
    from export.pipeline import export_all

    return export_all(tiny_checkpoint, tmp_path_factory.mktemp("export") / "out", full_config)
