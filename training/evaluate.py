"""Evaluate a checkpoint on any split of any dataset root: ``evaluate_checkpoint(...) -> metrics``.

The architecture, classes, input size and normalisation come from the checkpoint; the dataset is
read with the checkpoint's classes (labels the task leaves out are excluded, not errors).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)


class EvaluationError(EmobenchError):
    """An evaluation that cannot run (e.g. a device that is not there)."""


def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    split: str = "test",
    out_dir: str | os.PathLike[str] | None = None,
    kind: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    limit_images: int | None = None,
    faces: bool = False,
) -> dict[str, Any]:
    """Run the checkpoint's model over ``split`` of ``data_root`` and compute every metric.

    Args:
        checkpoint_path: an emobench checkpoint, a run folder or a runs folder (its latest run).
        data_root: any layout ``training.datasets`` reads.
        split: 'train', 'val', 'test' or 'all'.
        out_dir: when given, ``metrics.json``, ``confusion_matrix.png`` and ``per_class.png`` go there.
        kind: the dataset layout ('auto' detects it).
        batch_size, workers, device: how to run.
        limit_images: a stratified, seeded subset (quick checks).
        faces: crop each photo to its face first (``training.faces``; images without one are used whole).

    Returns:
        ``classification_metrics`` plus ``loss``, ``split``, ``checkpoint``, ``data_root``, ``arch``.

    Raises:
        CheckpointError, DatasetError, EvaluationError.
    """
    from torch.utils.data import DataLoader

    from training.checkpoint import load_checkpoint
    from training.datasets import create_dataset
    from training.engine import run_inference
    from training.loaders import DatasetView, stratified_indices
    from training.metrics import classification_metrics
    from training.runs import latest_checkpoint, write_evaluation
    from training.transforms import create_eval_transform

    path = Path(checkpoint_path)
    if path.is_dir():
        path = latest_checkpoint(path)
    ckpt = load_checkpoint(path)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"device {device} is not available here", hint="use --device cpu")
    model = ckpt.build_model().to(dev)
    dataset = create_dataset(data_root, kind=kind, split=split, class_names=ckpt.class_names, allow_empty_classes=True,
                             faces=faces)
    indices = list(range(len(dataset)))
    if limit_images:
        indices = stratified_indices(dataset.targets, limit_images, 0)
    view = DatasetView(dataset, indices, create_eval_transform(ckpt.input_spec))  # the checkpoint's input contract
    loader = DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=workers)
    y_true, y_pred, loss = run_inference(model, loader, dev)
    metrics = classification_metrics(y_true, y_pred, ckpt.class_names)
    if dataset.face_scan is not None:
        metrics["faces"] = dataset.face_scan.summary()
    metrics.update({"loss": loss, "split": dataset.split, "checkpoint": str(path), "data_root": str(data_root),
                    "dataset_kind": dataset.kind, "arch": ckpt.arch, "image_size": ckpt.image_size})
    if out_dir is not None:
        write_evaluation(metrics, Path(out_dir), title=f"{ckpt.arch} [{dataset.split}]")
    log.info("%s on %s [%s]: accuracy %.4f, macro F1 %.4f over %d images", ckpt.arch, data_root, dataset.split,
             metrics["accuracy"], metrics["f1_macro"], metrics["num_samples"])
    return metrics
