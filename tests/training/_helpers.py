"""Small shared pieces of the training tests."""

from __future__ import annotations

from pathlib import Path

from training.config import TrainConfig, load_config


def tiny_config(data_root: Path, out_dir: Path, **overrides) -> TrainConfig:
    """Phase 2 defaults shrunk to seconds: a 101k-parameter timm model at 32 px, no workers, no TensorBoard."""
    values = dict(
        data_root=str(data_root), out_dir=str(out_dir), arch="test_efficientnet", pretrained=False,
        image_size=32, batch_size=8, epochs=2, workers=0, tensorboard=False, progress=False,
        limit_train_images=28, limit_eval_images=14,
    )
    values.update(overrides)
    return load_config(phase="phase2", overrides=values)
