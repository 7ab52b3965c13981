"""Evaluate every artifact of a manifest over a whole split, with training's metrics.

The library behind ``emobench evaluate MANIFEST``: the eager FP32 model from the checkpoint and
each artifact run in its own host runtime on the same preprocessed images (the one transform
built from the manifest's input contract, ``create_eval_transform``), scored with ``training.metrics.classification_metrics``
(accuracy, weighted and per-class precision/recall/F1, confusion matrix).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from android_bench.plan import PlanError, model_key, read_manifest
from emobench_common.fileio import atomic_write_json
from emobench_common.names import EAGER_KEY

log = logging.getLogger(__name__)


def evaluate_manifest(manifest_path: str | Path, data_root: str | Path, split: str, out_dir: str | Path, *,
                      threads: int | None = None, include_eager: bool = True, chunk_images: int = 64,
                      kind: str = "auto", faces: bool = False) -> dict[str, Any]:
    """Score every model of a manifest on ``split`` of ``data_root``; write JSON into ``out_dir``.

    Writes ``out_dir/evaluation.json`` (all models) and ``out_dir/metrics_<model>.json`` (one each).

    Returns:
        ``{"manifest", "data_root", "split", "images", "models": {key: metrics or {"error": ...}}}``.

    Raises:
        PlanError: a bad manifest; DatasetError: a bad dataset.
    """
    from export.runtimes import EagerRuntime, load_runtime
    from training.datasets import create_dataset
    from training.metrics import classification_metrics
    from training.transforms import create_eval_transform

    mv = read_manifest(Path(manifest_path), verify=True)
    out = Path(out_dir)
    spec = mv.input_spec
    dataset = create_dataset(data_root, kind=kind, split=split, class_names=spec.class_names, allow_empty_classes=True,
                             faces=faces)
    transform = create_eval_transform(spec)
    images = np.stack([transform(dataset.load_image(i)).numpy() for i in range(len(dataset))]).astype(np.float32)
    labels = dataset.targets
    loaders: list[tuple[str, Any]] = []
    if include_eager:
        if not Path(mv.checkpoint_path).is_file():
            raise PlanError(f"{mv.path}: source checkpoint {mv.checkpoint_path} is missing",
                            hint="restore it, or evaluate without the eager model")
        loaders.append((EAGER_KEY, lambda: EagerRuntime.from_checkpoint(mv.checkpoint_path, threads=threads)))
    for a in mv.artifacts:
        path = mv.path.parent / a.relative_path
        loaders.append((model_key(a.format, a.precision, a.mode),
                        lambda p=path, f=a.format: load_runtime(p, f, threads=threads)))
    results: dict[str, Any] = {}
    for key, load in loaders:
        try:
            runtime = load()
            logits = np.concatenate([runtime.run(images[i:i + chunk_images])
                                     for i in range(0, len(images), chunk_images)])
            preds = logits.argmax(axis=1).tolist()
            metrics = classification_metrics(labels, preds, spec.class_names)
        except Exception as exc:  # one artifact failing must not hide the others' results
            log.warning("%s failed on %s [%s]: %s", key, data_root, split, exc)
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[key] = metrics
        atomic_write_json(out / f"metrics_{key}.json", metrics)
    report = {"manifest": str(mv.path), "data_root": str(data_root), "split": dataset.split, "images": len(labels),
              "class_names": list(spec.class_names), "models": results}
    if dataset.face_scan is not None:
        report["faces"] = dataset.face_scan.summary()
    atomic_write_json(out / "evaluation.json", report)
    return report
