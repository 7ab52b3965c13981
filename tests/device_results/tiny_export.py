"""A tiny real model, exported for real, shared by the ablation and results tests.

timm's ``test_efficientnet`` (101k parameters) at 32x32 with 7 classes, saved through the checkpoint
contract and exported with ``export.pipeline.export_all`` (ExecuTorch, ONNX and TorchScript, FP32
and dynamic INT8, batch 2). Built once per test session under pytest's base temp folder.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 32
EXPORT_BATCH = 2


def build_tiny_export(base: Path, sample_roots: dict[str, Path], *, formats=("executorch", "onnx", "torchscript"),
                      batch_size: int = EXPORT_BATCH) -> Path:
    """The manifest path of a tiny export in ``base`` (built on first use, reused afterwards)."""
    manifest = base / "export" / "manifest.json"
    if manifest.is_file():
        return manifest
    import timm
    import torch

    from export.config import ExportConfig
    from export.pipeline import export_all
    from training.checkpoint import make_checkpoint_dict, save_checkpoint
    from training.labels import EMOTIONS

    base.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=len(EMOTIONS), pretrained=False)
    ckpt = make_checkpoint_dict(model=model, arch="test_efficientnet", class_names=EMOTIONS,
                                input_size=(3, IMAGE_SIZE, IMAGE_SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    save_checkpoint(base / "checkpoint.pt", ckpt)
    config = ExportConfig(formats=tuple(formats), precisions=("fp32", "int8"), batch_size=batch_size,
                          eval_data=sample_roots["rafdb"], eval_images=8)
    result = export_all(base / "checkpoint.pt", base / "export", config)
    assert not result.failures, result.failures
    return manifest
