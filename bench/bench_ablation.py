"""Harness overhead of the ablation, as ratios measured in one run.

- virtual device: the device target's wall time (transfer, every runner call, pulls, telemetry,
  store writes) over (the runner-reported inference time of every execution, warm-up included, plus
  the one-time transfer); target <= 1.3.
- host-cpu: the host target's wall time over the sum of its timed runtime calls (warm-up calls
  included); target <= 1.1.

Full: EfficientNet-B0 at 112x112 (FP32 + dynamic INT8 ExecuTorch, batch 16), 30 experiments,
warm-up 3, repeats 5. Quick: timm's test_efficientnet at 64x64, 4 experiments, batch 8.
Exporting and preprocessing happen before the timed part and are not counted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.harness import BenchmarkError, Figure, main, ratio_figure


def _export(base: Path, sample: dict, *, arch: str, size: int, batch: int) -> Path:
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
    import functools

    from android_bench.ablation import RunOptions, run_ablation
    from android_bench.device import connect
    from android_bench.keys import ensure_adb_key
    from android_bench.plan import PlanConfig, build_plan
    from android_bench.virtual import VirtualDevice
    from device_results.store import ResultsStore
    from training.sample import SampleConfig, generate_sample

    arch, size, batch, experiments, warmup, repeats = (
        ("test_efficientnet", 64, 8, 4, 1, 2) if quick else ("efficientnet_b0", 112, 16, 30, 3, 5))
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp:
        base = Path(tmp)
        sample = generate_sample(base / "data", SampleConfig(seed=0, rafdb_train_per_class=4,
                                                             rafdb_test_per_class=40, fer_train_per_class=1,
                                                             fer_val_per_class=1, fer_test_per_class=1,
                                                             custom_per_class=40))
        manifest = _export(base, sample, arch=arch, size=size, batch=batch)
        key = ensure_adb_key(base / "home" / ".android" / "adbkey", create=True)
        with VirtualDevice(base / "device", authorized_keys=Path(str(key) + ".pub")) as vd:
            target = f"android:{vd.address}"
            plan = build_plan(PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"],
                                         targets=("host-cpu", target), experiments=experiments, batch_size=batch,
                                         warmup=warmup, repeats=repeats, include_eager=False))
            with ResultsStore(base / "results.db") as store:
                result = run_ablation(plan, store, RunOptions(connect=functools.partial(connect, adb_key=key)))
        if result.status != "complete":
            raise BenchmarkError(f"the ablation ended {result.status}: {result.message}")
        dev, host = result.timings[target], result.timings["host-cpu"]
        note = f"{arch} {size}x{size}, {experiments} experiments x batch {batch}, warm-up {warmup}, repeats {repeats}"
        return [
            ratio_figure("ablation wall / (runner inference + transfer), virtual device", value=dev.wall_s,
                         reference=dev.inference_s + dev.transfer_s, unit="s",
                         reference_label="runner-reported inference + one-time transfer", target_max=1.3,
                         spread=f"inference {dev.inference_s:.2f} s, transfer {dev.transfer_s:.2f} s", note=note),
            ratio_figure("ablation wall / timed runtime calls, host-cpu", value=host.wall_s, reference=host.inference_s,
                         unit="s", reference_label="sum of timed runtime calls", target_max=1.1, note=note),
        ]


if __name__ == "__main__":
    main(run)
