"""Harness overhead of the ablation, as ratios measured in one run.

- virtual device: the device target's wall time (transfer, every runner call, pulls, telemetry,
  store writes) over (the runner-reported inference time of every execution, warm-up included, plus
  the one-time transfer); target <= 1.3.
- host-cpu: the host target's wall time over the sum of its timed runtime calls (warm-up calls
  included); target <= 1.1.

Full: EfficientNet-B0 at 112x112 (FP32 + dynamic INT8 ExecuTorch, batch 16), 30 experiments,
warm-up 3, repeats 5. Quick: timm's test_efficientnet at 64x64, 4 experiments, batch 8.
Exporting and preprocessing happen before the timed part and are not counted.

host-cuda is measured where ``torch.cuda.is_available()``; a phone is measured when
``EMOBENCH_BENCH_PHONE=android:<serial>`` (and ``EMOBENCH_BENCH_RUNNER=<executor_runner>`` unless
the runner is already on the phone) is set. Otherwise both are reported as not measured here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import BenchmarkError, Figure, interval_figure, main, median_interval, ratio_figure


def make_sample(folder: Path) -> dict:
    """The ablation benchmarks' data: the built-in sample with 40 seen and 40 unseen images per class."""
    from training.sample import SampleConfig, generate_sample

    return generate_sample(folder, SampleConfig(seed=0, rafdb_train_per_class=4, rafdb_test_per_class=40,
                                                fer_train_per_class=1, fer_val_per_class=1, fer_test_per_class=1,
                                                custom_per_class=40))


def export_sample_model(base: Path, sample: dict, *, arch: str, size: int, batch: int) -> Path:
    """Export a fresh ``arch`` model for the sample dataset under ``base``; returns the manifest path."""
    import timm
    import torch

    from export.config import ExportConfig
    from export.pipeline import export_all
    from training.checkpoint import make_checkpoint_dict, save_checkpoint
    from training.labels import EMOTIONS

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=len(EMOTIONS), pretrained=False)
    ckpt = make_checkpoint_dict(model=model, arch=arch, class_names=EMOTIONS, input_size=(3, size, size),
                                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    save_checkpoint(base / "checkpoint.pt", ckpt)
    manifest = export_all(base / "checkpoint.pt", base / "export",
                          ExportConfig(formats=("executorch",), precisions=("fp32", "int8"), batch_size=batch,
                                       eval_data=sample["rafdb"], eval_images=8))
    if manifest.failures:
        raise BenchmarkError(f"export failed: {manifest.failures}")
    return manifest.path


def run(*, quick: bool) -> list[Figure]:
    import torch

    from android_bench.ablation import RunOptions, run_ablation
    from android_bench.device import connect
    from android_bench.keys import ensure_adb_key
    from android_bench.plan import PlanConfig, build_plan
    from android_bench.virtual import VirtualDevice
    from device_results.store import ResultsStore

    runs = 2 if quick else 3  # measured whole runs, after one warm-up run
    arch, size, batch, experiments, warmup, repeats = (
        ("test_efficientnet", 64, 8, 4, 1, 2) if quick else ("efficientnet_b0", 112, 16, 30, 3, 5))
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp:
        base = Path(tmp)
        sample = make_sample(base / "data")
        manifest = export_sample_model(base, sample, arch=arch, size=size, batch=batch)
        key = ensure_adb_key(base / "home" / ".android" / "adbkey", create=True)
        phone = os.environ.get("EMOBENCH_BENCH_PHONE", "")
        runner = os.environ.get("EMOBENCH_BENCH_RUNNER")
        has_cuda = torch.cuda.is_available()
        with VirtualDevice(base / "device", authorized_keys=Path(str(key) + ".pub")) as vd:
            target = f"android:{vd.address}"
            targets = ("host-cpu", target) + (("host-cuda",) if has_cuda else ()) + ((phone,) if phone else ())
            plan = build_plan(PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"],
                                         targets=targets, experiments=experiments, batch_size=batch,
                                         warmup=warmup, repeats=repeats, include_eager=False))

            def _connect(spec: str):
                # the virtual device trusts only this benchmark's key; a phone trusts the user's own
                return connect(spec, adb_key=key) if spec == vd.address else connect(spec)

            options = RunOptions(connect=_connect, runner=Path(runner) if runner else None)
            timings: list[dict] = []
            with ResultsStore(base / "results.db") as store:
                for attempt in range(1 + runs):  # the first whole run warms up (imports, first loads)
                    result = run_ablation(plan, store, options)
                    if result.status != "complete":
                        raise BenchmarkError(f"the ablation ended {result.status}: {result.message}")
                    if attempt:
                        timings.append(result.timings)
        note = (f"{arch} {size}x{size}, {experiments} experiments x batch {batch}, warm-up {warmup}, "
                f"repeats {repeats}; median of {runs} whole runs after one warm-up run"
                + ("; quick: a smoke run, overhead dominates, no target" if quick else ""))
        figures = [_device_figure("virtual device", [t[target] for t in timings], note, quick=quick),
                   _host_figure("host-cpu", [t["host-cpu"] for t in timings], note, quick=quick)]
        if has_cuda:
            figures.append(_host_figure("host-cuda", [t["host-cuda"] for t in timings], note, quick=quick))
        else:
            figures.append(Figure.not_measured(
                "ablation wall / timed runtime calls, host-cuda", reason="no CUDA device on this machine",
                command="python -m bench --only bench_ablation (on a machine with CUDA)", target="ratio <= 1.1"))
        if phone:
            figures.append(_device_figure(phone, [t[phone] for t in timings], note, quick=quick))
        else:
            figures.append(Figure.not_measured(
                "ablation wall / (runner inference + transfer), phone", reason="no phone connected",
                command="EMOBENCH_BENCH_PHONE=android:<serial> EMOBENCH_BENCH_RUNNER=<arm64 executor_runner> "
                        "python -m bench --only bench_ablation", target="ratio <= 1.3"))
        return figures


def _median_run(runs: list[Any], ratio: Callable[[Any], float]) -> tuple[Any, str]:
    """The run with the median ratio, and the spread of the ratios over all runs."""
    ordered = sorted(runs, key=ratio)
    return ordered[len(ordered) // 2], "ratios over runs: " + ", ".join(f"{ratio(r):.3f}" for r in ordered)


def _run_ratio_figure(name: str, runs: list, ratio: Callable[[Any], float], reference: Callable[[Any], float], *,
                      reference_label: str, target_max: float | None, note: str, extra: str = "") -> Figure:
    """Each whole run is its own pair (wall time and its reference measured in the same run); with two or more
    runs the ratio is the median over runs with a bootstrap interval, judged on its bound."""
    timing, spread = _median_run(runs, ratio)
    if len(runs) < 2:
        return ratio_figure(name, value=timing.wall_s, reference=reference(timing), unit="s",
                            reference_label=reference_label, target_max=target_max, spread=spread + extra, note=note)
    interval = median_interval([ratio(r) for r in runs])
    return interval_figure(name, interval, value=timing.wall_s, reference=reference(timing), unit="s",
                           reference_label=reference_label, target_max=target_max,
                           basis="whole runs (wall time and reference from the same run)",
                           note=f"{spread}{extra}; {note}")


def _device_figure(name: str, runs: list, note: str, *, quick: bool = False) -> Figure:
    timing, _ = _median_run(runs, lambda t: t.wall_s / (t.inference_s + t.transfer_s))
    return _run_ratio_figure(f"ablation wall / (runner inference + transfer), {name}", runs,
                             lambda t: t.wall_s / (t.inference_s + t.transfer_s),
                             lambda t: t.inference_s + t.transfer_s,
                             reference_label="runner-reported inference + one-time transfer",
                             target_max=None if quick else 1.3, note=note,
                             extra=f"; median run: inference {timing.inference_s:.2f} s, "
                                   f"transfer {timing.transfer_s:.2f} s")


def _host_figure(name: str, runs: list, note: str, *, quick: bool = False) -> Figure:
    return _run_ratio_figure(f"ablation wall / timed runtime calls, {name}", runs, lambda t: t.wall_s / t.inference_s,
                             lambda t: t.inference_s, reference_label="sum of timed runtime calls",
                             target_max=None if quick else 1.1, note=note)




if __name__ == "__main__":
    main(run)

