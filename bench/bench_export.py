"""Export benchmark: EfficientNet-B0 at 224x224, batch 1 - size and host-CPU latency of every artifact.

Exports a (randomly initialised: no pretrained weights can be downloaded here) EfficientNet-B0
checkpoint to every format x precision x mode with ``export_all`` (timed as a whole), then times
every artifact in its own runtime against eager PyTorch, interleaved so machine drift hits all alike.
Sizes and latencies do not depend on the weights' values, only on the architecture.

Figures: per artifact size (INT8 against its FP32 twin) and median latency (against eager); INT8/FP32
latency per format; fastest INT8 against fastest FP32; the whole export's wall time with its worker
processes (``ExportConfig.jobs`` auto: one per core, up to one per group of jobs) against the same
export in one process (``jobs=1``), in alternating paired rounds.
``--quick``: timm's ``test_efficientnet`` at 64x64, every format in FP32 + dynamic INT8, one export each way
(a smoke run of the code path; for so small a model the workers' start-up outweighs what they save, so no
target, and one round forms no paired interval).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    paired_rounds,
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


EXPORT_ROUNDS = 2  # each round exports twice, in workers and in one process, in alternating order
QUICK_EXPORT_ROUNDS = 1  # the smoke run: each export is a fresh process of ~20 s even for the tiny model


def run(*, quick: bool) -> list[Figure]:
    from export.config import ExportConfig
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
        from export.manifest import load_manifest
        from export.parallel import group_jobs, usable_cores, worker_count
        from export.pipeline import plan_jobs

        exports: list[Path] = []

        def export_with(jobs: int | None) -> Callable[[], float]:
            def timed() -> float:
                exports.append(tmp_path / f"export-{len(exports)}")
                return _timed_export(checkpoint, exports[-1], dataclasses.replace(config, jobs=jobs))
            return timed

        n_rounds = QUICK_EXPORT_ROUNDS if quick else EXPORT_ROUNDS
        rounds = paired_rounds({"workers": export_with(None), "one process": export_with(1)},
                               rounds=n_rounds, warmup=0)
        manifest = load_manifest(exports[-1], verify_files=True)
        workers = worker_count(None, len(group_jobs(plan_jobs(config)[0])), usable_cores())
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
    parallel_s, sequential_s = statistics.median(rounds["workers"]), statistics.median(rounds["one process"])
    label = f"export all {len(manifest.artifacts)} artifacts"
    figures.append(Figure(
        name=label, value=parallel_s, unit="s", target="< 90 s", met=parallel_s < 90 if not quick else None,
        spread="runs: " + ", ".join(f"{v:.1f} s" for v in sorted(rounds["workers"])),
        note=f"export + verification of every artifact in {workers} worker processes (jobs auto, "
        f"{usable_cores()} cores), a fresh process each run, median of {n_rounds} run(s)"
        + (" (quick: tiny model, no target)" if quick else "")))
    figures.append(Figure(
        name=f"{label}, one process (jobs=1)", value=sequential_s, unit="s",
        spread="runs: " + ", ".join(f"{v:.1f} s" for v in sorted(rounds["one process"])),
        note=f"the same export without worker processes, median of {n_rounds} run(s)"))
    versus = f"{label}: {workers} workers vs one process"
    if n_rounds < 2:
        figures.append(Figure.not_measured(versus, reason=f"--quick runs {n_rounds} round, a paired interval needs 2",
                                           command="python -m bench --only bench_export"))
        return figures
    interval = paired_ratio_interval(rounds["workers"], rounds["one process"])
    figures.append(interval_figure(
        versus, interval, value=parallel_s, reference=sequential_s, unit="s",
        reference_label="one process (jobs=1)", basis="alternating paired rounds",
        note="wall time of the whole export; below 1 = the worker processes save time"))
    return figures


_EXPORT_ONCE = """
import logging, pickle, sys
from export.pipeline import export_all
logging.getLogger("export").setLevel(logging.ERROR)
with open(sys.argv[1], "rb") as fh:
    config = pickle.load(fh)
manifest = export_all(sys.argv[2], sys.argv[3], config)
for f in manifest.failures:
    print(f"{f.format} {f.precision}-{f.mode}: {f.error}", file=sys.stderr)
sys.exit(1 if manifest.failures else 0)
"""


def _timed_export(checkpoint: Path, out_dir: Path, config: Any) -> float:
    """Seconds of one ``export_all`` in a fresh Python process, as a user's ``emobench export`` runs it
    (imports included: worker processes pay theirs in every run, so the one-process export must too)."""
    config_path = out_dir.with_suffix(".config.pkl")
    config_path.write_bytes(pickle.dumps(config))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _EXPORT_ONCE, str(config_path), str(checkpoint), str(out_dir)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchmarkError(f"export failed (exit {proc.returncode}): " + " | ".join(proc.stderr.splitlines()[-5:]))
    return seconds


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
