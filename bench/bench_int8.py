"""INT8 methods side by side: agreement and accuracy change against FP32, with size and latency ratios.

On a trained model (agreement is meaningless on random weights): the demo's checkpoint
(``demo_out/train/phase2/latest``, or ``EMOBENCH_INT8_CHECKPOINT``) with its sample data, seen = the
RAF-DB test split, unseen = the custom photos. Each post-training ExecuTorch INT8 method (dynamic,
static, hybrid, mixed) is exported in its own process (they are independent; with 2+ cores they overlap). Then,
on its own so that it shares the cores with nothing, a seeded QAT run starts from the same FP32
checkpoint (the packaged ``qat`` defaults of ``resolve_qat_config``, in the bench's temp folder) and its
``int8-qat`` .pte is exported. Every artifact is run in ``executorch.runtime`` on every seen and unseen
image, and compared with the eager FP32 model (the QAT run's teacher is that same model).
Calibration, the mixed-precision choice and QAT use training images only.

Figures: what rounding the weights alone to INT8 costs (eager, activations FP32: the floor of
round-to-nearest INT8); then per method: top-1 agreement with FP32 (target >= 99%), seen accuracy change
in points (target within 0.5), size / FP32 .pte (target <= 0.30), host-CPU latency / static INT8 (target
<= 1.05 for hybrid and mixed) and / FP32, all latencies interleaved in one loop; the wall time of the
parallel export of FP32 + the four post-training methods (target < 90 s); and the QAT run's training
time (no target).
``--quick``: timm's ``test_efficientnet`` at 64 px, trained for a few steps on a tiny sample (seeded);
QAT for one epoch of at most 2 steps.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import BenchmarkError, Figure, interleaved, main, ratio_figure

PTQ_METHODS = ("dynamic", "static", "hybrid", "mixed")  # post-training: exported side by side from the FP32 checkpoint
METHODS = (*PTQ_METHODS, "qat")
_QUICK_QAT_STEPS = 2


def _demo_checkpoint() -> Path | None:
    env = os.environ.get("EMOBENCH_INT8_CHECKPOINT")
    if env:
        return Path(env)
    from export.pipeline import find_latest_checkpoint

    runs = Path("demo_out/train/phase2")
    try:
        return find_latest_checkpoint(runs) if runs.exists() else None
    except Exception:  # noqa: BLE001 - no finished demo run: reported as not measured
        return None


def _quick_checkpoint(tmp: Path) -> tuple[Path, dict[str, Path]]:
    from training.config import load_config
    from training.sample import SampleConfig, generate_sample
    from training.train import train

    data = generate_sample(tmp / "data", SampleConfig(seed=0, rafdb_train_per_class=8, rafdb_test_per_class=3,
                                                      fer_train_per_class=1, fer_val_per_class=1,
                                                      fer_test_per_class=1, custom_per_class=3))
    config = load_config(phase="phase2", overrides={
        "arch": "test_efficientnet", "pretrained": False, "data_root": str(data["rafdb"]), "image_size": 64,
        "epochs": 1, "batch_size": 16, "lr": 0.003, "workers": 0, "out_dir": str(tmp / "runs"), "run_name": "q",
        "tensorboard": False, "mixup_alpha": 0.0, "early_stopping_patience": None, "device": "cpu",
        "progress": False, "deterministic": True})
    return train(config).checkpoint_path, data


def _export_one(checkpoint: str, out: str, mode: str | None, rafdb: str, calibration_images: int) -> dict[str, Any]:
    """One export_all in a worker process: the FP32 .pte (mode None) or one INT8 method."""
    from export.config import ExportConfig
    from export.pipeline import export_all

    logging.getLogger("export").setLevel(logging.ERROR)
    config = ExportConfig(formats=("executorch",), precisions=("fp32",) if mode is None else ("int8",),
                          int8_modes=() if mode is None else (mode,), calibration_data=Path(rafdb),
                          calibration_images=calibration_images, eval_data=Path(rafdb), eval_images=8)
    started = time.perf_counter()
    manifest = export_all(checkpoint, out, config)
    if manifest.failures:
        raise BenchmarkError(f"{mode or 'fp32'} export failed: {manifest.failures[0].error}")
    a = manifest.find("executorch", "fp32" if mode is None else "int8", mode)
    if a is None:
        raise BenchmarkError(f"{mode or 'fp32'} export of {checkpoint} wrote no such .pte: "
                             f"{[x.key for x in manifest.artifacts]}")
    return {"mode": mode, "path": str(a.path), "size_bytes": a.size_bytes, "seconds": time.perf_counter() - started,
            "quantization": a.quantization.to_dict() if a.quantization else None, "details": dict(a.details)}


def _train_qat(checkpoint: str, out: str, quick: bool) -> dict[str, Any]:
    """A seeded QAT run from ``checkpoint`` in a worker process: the packaged qat defaults, unless quick."""
    from training.qat_run import resolve_qat_config
    from training.train import train

    logging.getLogger("training").setLevel(logging.ERROR)
    overrides: dict[str, Any] = {"out_dir": out, "run_name": "bench", "workers": 0, "progress": False,
                                 "tensorboard": False}
    if quick:
        overrides |= {"qat": {"epochs": 1}, "max_steps_per_epoch": _QUICK_QAT_STEPS}
    config = resolve_qat_config(checkpoint, overrides=overrides)
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    return {"checkpoint": str(result.checkpoint_path), "seconds": seconds, "epochs": config.epochs,
            "max_steps_per_epoch": config.max_steps_per_epoch, "lr": config.lr, "seed": config.seed,
            "train_images": result.metrics.get("train_images"), "test_agreement": result.metrics.get("agreement")}


def run(*, quick: bool) -> list[Figure]:
    import torch

    from export.config import ExportConfig
    from export.data import load_image_set
    from export.runtimes import load_runtime
    from export.sensitivity import rounding_floor
    from training.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp_name:
        tmp = Path(tmp_name)
        if quick:
            checkpoint, data = _quick_checkpoint(tmp)
            rafdb, custom = Path(data["rafdb"]), Path(data["custom"])
        else:
            found = _demo_checkpoint()
            if found is None:
                return [Figure.not_measured("INT8 methods vs FP32 on the demo model",
                                            reason="no trained demo model (demo_out/train/phase2)",
                                            command="make demo, then python -m bench --only bench_int8")]
            checkpoint = found
            rafdb = Path(str(load_checkpoint(checkpoint).config.get("data_root")))
            custom = rafdb.parent / "custom"
        ckpt = load_checkpoint(checkpoint)
        seen = load_image_set(rafdb, split="test", count=10**6, spec=ckpt.input_spec, purpose="bench")
        unseen = load_image_set(custom, split="all", count=10**6, spec=ckpt.input_spec, purpose="bench")
        # the export's own default (128): 256 demo training images include activation outliers that
        # collapse min/max and histogram calibration (docs/export.md, "Why the default observer is auto")
        calibration_images = 16 if quick else ExportConfig().calibration_images
        jobs = (None, *PTQ_METHODS)
        started = time.perf_counter()
        workers = max(1, min(len(jobs), os.cpu_count() or 1))
        # spawn: a forked child of a process that has run torch can hang in OpenMP
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
            done = list(pool.map(functools.partial(_run_export, str(checkpoint), str(tmp), str(rafdb),
                                                   calibration_images), jobs))
        export_s = time.perf_counter() - started
        by_mode = {d["mode"]: d for d in done}
        # QAT after the parallel export, alone: its training time and the export's wall time stay unshared
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            qat = pool.submit(_train_qat, str(checkpoint), str(tmp / "qat-runs"), quick).result()
            by_mode["qat"] = pool.submit(_run_export, qat["checkpoint"], str(tmp), str(rafdb), calibration_images,
                                         "qat").result()
        model = ckpt.build_model().eval()
        images = np.concatenate([seen.images, unseen.images])
        labels = np.array(seen.labels + unseen.labels)
        with torch.no_grad():
            eager = model(torch.from_numpy(images)).numpy()
        floor = rounding_floor(model, images, fp32_logits=eager)
        runtimes = {m: load_runtime(Path(d["path"]), "executorch", batch_size=1) for m, d in by_mode.items()}
        logits = {m: r.run(images) for m, r in runtimes.items()}
        x = images[:1]
        timings = interleaved({str(m): functools.partial(r.run, x) for m, r in runtimes.items()},
                              warmup=3, repeats=5 if quick else 20)

    n_seen = len(seen)
    fp32_top = eager.argmax(1)
    figures: list[Figure] = []
    fp32_seen_acc = float((fp32_top[:n_seen] == labels[:n_seen]).mean())
    figures.append(Figure(
        name="INT8 weight rounding alone (eager, activations FP32) top-1 agreement with FP32",
        value=100 * floor.top1_agreement, unit="%",
        note=(f"{len(images)} images; the floor of round-to-nearest INT8: every conv/linear weight on its per-channel "
              f"grid; mean |logit change| {floor.mean_abs_diff:.4f}, closer calls than that "
              f"{100 * floor.near_tie_share:.1f}% of the images")))
    for mode in METHODS:
        d, top = by_mode[mode], logits[mode].argmax(1)
        agreement = float((top == fp32_top).mean())
        seen_change = 100 * (float((top[:n_seen] == labels[:n_seen]).mean()) - fp32_seen_acc)
        q = d["quantization"] or {}
        mixed = d["details"].get("mixed", {})
        note = (f"{q.get('layers_quantized')}/{q.get('layers_total')} weight layers INT8"
                + (f"; FP32 groups: {', '.join(mixed['fp32_groups']) or 'none'}" if mixed else "")
                + (f"; QAT {qat['epochs']} epoch(s)" if mode == "qat" else ""))
        figures.append(Figure(name=f"executorch int8-{mode} top-1 agreement with FP32", value=100 * agreement,
                              unit="%", target=">= 99%", met=agreement >= 0.99 if not quick else None,
                              note=f"{len(images)} images ({n_seen} seen, {len(images) - n_seen} unseen); {note}"))
        figures.append(Figure(name=f"executorch int8-{mode} seen accuracy change", value=round(seen_change, 2),
                              unit="points", target="within 0.5", met=abs(seen_change) <= 0.5 if not quick else None,
                              note=f"FP32 seen accuracy {100 * fp32_seen_acc:.1f}%"))
        figures.append(ratio_figure(f"executorch int8-{mode} size", value=d["size_bytes"] / 1e6,
                                    reference=by_mode[None]["size_bytes"] / 1e6, unit="MB",
                                    reference_label="executorch fp32", target_max=None if quick else 0.30))
        figures.append(ratio_figure(f"executorch int8-{mode} latency vs FP32", value=timings[mode].median_ms,
                                    reference=timings["None"].median_ms, unit="ms", reference_label="executorch fp32",
                                    spread=timings[mode].spread_ms()))
        if mode != "static":
            figures.append(ratio_figure(f"executorch int8-{mode} latency vs int8-static", value=timings[mode].median_ms,
                                        reference=timings["static"].median_ms, unit="ms",
                                        reference_label="executorch int8-static",
                                        target_max=1.05 if mode in ("hybrid", "mixed") and not quick else None,
                                        spread=timings[mode].spread_ms()))
    steps = "" if qat["max_steps_per_epoch"] is None else f" of at most {qat['max_steps_per_epoch']} steps"
    agreement_note = ("" if qat["test_agreement"] is None
                      else f"; fake-quantized test-split agreement with FP32 {100 * qat['test_agreement']:.1f}%")
    figures.append(Figure(name="int8-qat: QAT training from the FP32 checkpoint", value=round(qat["seconds"], 1),
                          unit="s", note=(f"{qat['epochs']} epoch(s){steps} on {qat['train_images']} training images, "
                                          f"lr {qat['lr']:g}, seed {qat['seed']}; train() wall time (graph preparation, epochs, "
                                          "validation, test evaluation), nothing else of this benchmark running"
                                          f"{agreement_note}; then the int8-qat .pte export "
                                          f"{by_mode['qat']['seconds']:.0f} s (not in the parallel export below)")))
    figures.append(Figure(name=f"export FP32 + {len(PTQ_METHODS)} INT8 methods in {workers} processes", value=export_s,
                          unit="s", target="< 90 s", met=export_s < 90 if not quick else None,
                          spread=", ".join(f"{m or 'fp32'} {by_mode[m]['seconds']:.0f} s" for m in jobs),
                          note=f"{calibration_images} calibration images; mixed includes its sensitivity analysis"))
    return figures


def _run_export(checkpoint: str, tmp: str, rafdb: str, calibration_images: int, mode: str | None) -> dict[str, Any]:
    out = Path(tmp) / f"export-{mode or 'fp32'}"
    return json.loads(json.dumps(_export_one(checkpoint, str(out), mode, rafdb, calibration_images)))


if __name__ == "__main__":
    main(run)
