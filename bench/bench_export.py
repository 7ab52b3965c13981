"""Export benchmark: EfficientNet-B0 at 224x224, batch 1 - size and host-CPU latency of every artifact.

Exports a (randomly initialised: no pretrained weights can be downloaded here) EfficientNet-B0
checkpoint to every format x precision x mode with ``export_all`` (timed as a whole), then times
every artifact in its own runtime against eager PyTorch, interleaved so machine drift hits all alike.
Sizes and latencies do not depend on the weights' values, only on the architecture.

Figures: per artifact size (INT8 against its FP32 twin) and median latency (against eager); INT8/FP32
latency per format; fastest INT8 against fastest FP32; the whole export's wall time.
``--quick``: timm's ``test_efficientnet`` at 64x64, TorchScript and ONNX FP32 + dynamic INT8 only (a smoke
run of the code path; ExecuTorch lowering alone would take most of the quick budget, and the tests cover it).
"""

from __future__ import annotations

import functools
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import (
    BenchmarkError,
    Figure,
    interleaved,
    interval_figure,
    main,
    measure,
    paired_ratio_interval,
    ratio_figure,
)


def _checkpoint(path: Path, arch: str, image_size: int) -> Path:
    import torch

    from training.checkpoint import make_checkpoint_dict, save_checkpoint
    from training.labels import EMOTIONS
    from training.models import create_model
    from training.transforms import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    model = create_model(arch, num_classes=len(EMOTIONS))
    return save_checkpoint(path, make_checkpoint_dict(
        model=model, arch=arch, class_names=EMOTIONS, input_size=(3, image_size, image_size),
        mean=IMAGENET_MEAN, std=IMAGENET_STD))


EXPORT_RUNS = 2


def run(*, quick: bool) -> list[Figure]:
    from export.config import ExportConfig
    from export.pipeline import export_all
    from export.runtimes import EagerRuntime, load_runtime
    from training.checkpoint import load_checkpoint
    from training.sample import SampleConfig, generate_sample

    logging.getLogger("export").setLevel(logging.ERROR)
    arch, size = ("test_efficientnet", 64) if quick else ("efficientnet_b0", 224)
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tmp_path = Path(tmp)
        data = generate_sample(tmp_path / "data", SampleConfig(
            seed=0, rafdb_train_per_class=3, rafdb_test_per_class=1, fer_train_per_class=2, fer_val_per_class=2,
            fer_test_per_class=2, custom_per_class=2))
        checkpoint = _checkpoint(tmp_path / "checkpoint.pt", arch, size)
        config = ExportConfig(
            formats=("torchscript", "executorch", "onnx"),
            precisions=("fp32", "int8"), int8_modes=("dynamic",) if quick else ("dynamic", "static"),
            calibration_data=data["rafdb"], calibration_images=8 if quick else 16,
            eval_data=data["rafdb"], eval_images=4,
        )
        export_runs_s = []
        for attempt in range(EXPORT_RUNS):  # the whole export, a one-off job, timed twice from cold
            started = time.perf_counter()
            manifest = export_all(checkpoint, tmp_path / f"export-{attempt}", config)
            export_runs_s.append(time.perf_counter() - started)
            if manifest.failures:
                raise BenchmarkError("export failed: " + "; ".join(f"{f.format} {f.precision}: {f.error}"
                                                                   for f in manifest.failures))
        export_s = statistics.median(export_runs_s)
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        runtimes: dict[str, Any] = {"eager": EagerRuntime.from_checkpoint(load_checkpoint(checkpoint))}
        for a in manifest.artifacts:
            runtimes[a.label] = load_runtime(a.path, a.format, batch_size=a.batch_size)
        timings = interleaved({k: functools.partial(r.run, x) for k, r in runtimes.items()},
                              warmup=3, repeats=5 if quick else 15)
        cuda_figure = _cuda_eager_figure(checkpoint, x, eager_cpu=timings["eager"], arch=arch, quick=quick)

    eager_ms = timings["eager"].median_ms
    figures: list[Figure] = [Figure(name=f"{arch} eager FP32 latency", value=eager_ms, unit="ms",
                                    spread=timings["eager"].spread_ms(), note="PyTorch eager, the reference")]
    fp32 = {a.format: a for a in manifest.artifacts if a.precision == "fp32"}
    for a in manifest.artifacts:
        t = timings[a.label]
        twin = fp32.get(a.format)
        if a.precision == "int8" and twin is not None:
            q = a.quantization
            figures.append(ratio_figure(
                f"{a.label} size", value=a.size_bytes / 1e6, reference=twin.size_bytes / 1e6, unit="MB",
                reference_label=f"{twin.label}", target_max=0.30 if a.format == "executorch" and not quick else None,
                note="exact (file sizes); "
                + (f"{q.layers_quantized}/{q.layers_total} weight layers INT8" if q else "")))
            figures.append(_latency_ratio(f"{a.label} latency vs FP32", t, timings[twin.label], twin.label))
        else:
            figures.append(Figure(name=f"{a.label} size", value=a.size_bytes / 1e6, unit="MB"))
        figures.append(_latency_ratio(f"{a.label} latency vs eager", t, timings["eager"], "eager FP32"))
    int8 = [a for a in manifest.artifacts if a.precision == "int8"]
    best_int8 = min(int8, key=lambda a: timings[a.label].median_ms)
    best_fp32 = min(fp32.values(), key=lambda a: timings[a.label].median_ms)
    figures.append(_latency_ratio(f"fastest INT8 ({best_int8.label})", timings[best_int8.label],
                                  timings[best_fp32.label], f"fastest FP32 ({best_fp32.label})",
                                  target_max=None if quick else 1.0))
    figures.append(cuda_figure)
    figures.append(Figure(
        name=f"export all {len(manifest.artifacts)} artifacts", value=export_s, unit="s", target="< 90 s",
        met=export_s < 90 if not quick else None,
        spread="runs: " + ", ".join(f"{v:.1f} s" for v in sorted(export_runs_s)),
        note=f"export + verification of every artifact, median of {EXPORT_RUNS} runs"
        + (" (quick: tiny model, no target)" if quick else "")))
    return figures


def _latency_ratio(name: str, value, reference, reference_label: str, *, target_max: float | None = None) -> Figure:
    """value/reference latency from the same interleaved rounds, with its paired 95% bootstrap interval."""
    interval = paired_ratio_interval(value.samples_s, reference.samples_s)
    return interval_figure(name, interval, value=value.median_ms, reference=reference.median_ms, unit="ms",
                           reference_label=reference_label, target_max=target_max,
                           note=f"value {value.spread_ms()}; reference {reference.spread_ms()}")


def _cuda_eager_figure(checkpoint: Path, x: np.ndarray, *, eager_cpu, arch: str, quick: bool) -> Figure:
    """Eager FP32 on the host GPU next to the host CPU: a hardware comparison, labelled as one."""
    import torch

    from export.runtimes import EagerRuntime
    from training.checkpoint import load_checkpoint

    name = f"{arch} eager FP32 latency, host-cuda vs host-cpu (different hardware)"
    if not torch.cuda.is_available():
        return Figure.not_measured(name, reason="no CUDA device on this machine",
                                   command="python -m bench --only bench_export (on a machine with CUDA)")
    gpu = EagerRuntime.from_checkpoint(load_checkpoint(checkpoint), device="cuda")
    t = measure(lambda: gpu.run(x), warmup=10, repeats=20 if quick else 50)  # .cpu() in run() synchronises
    return ratio_figure(name, value=t.median_ms, reference=eager_cpu.median_ms, unit="ms",
                        reference_label="eager FP32 host-cpu", spread=t.spread_ms(),
                        note="compares a GPU with a CPU, not two models")


if __name__ == "__main__":
    main(run)
