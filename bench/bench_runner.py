"""emobench's native executor_runner: vs the Python stand-in, profiling overhead, profile coverage.

EfficientNet-B0 (timm, random weights: latency does not depend on the weights) at 224x224, batch 1,
lowered to ExecuTorch with XNNPACK (FP32 and dynamic INT8). Every ratio comes from paired rounds run
alternately, with a 95% percentile-bootstrap interval over the rounds; "met" is judged on its bound.

- native / stand-in per-image latency: both runners on the virtual device, started by its shell over
  adb-shell, on the same .pte and the same input bytes, ``--cpu_threads 1``; each round runs each runner
  once for ``--num_executions K`` and takes the median of its own ``Iteration i of N`` times.
- profiling overhead: the native runner with ``--etdump_path`` / without, same .pte and input,
  alternating; target <= 1.15.
- profile coverage: per execution, the summed operator times of the ETDump / ``Method::execute``,
  read with ExecuTorch's Inspector; the median over executions; target >= 0.9.

``--quick`` (the test suite's smoke run) uses a tiny model, FP32 only, and sets no targets (its
microsecond operators leave coverage low).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.harness import (
    BenchmarkError,
    Figure,
    interval_figure,
    main,
    median_interval,
    paired_ratio_interval,
    paired_rounds,
)


def _export(arch: str, size: int, folder: Path, *, with_int8: bool = True) -> dict[str, Path]:
    import timm
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=7).eval()
    x = torch.randn(1, 3, size, size)
    out: dict[str, Path] = {}
    with torch.no_grad():
        fp32 = torch.export.export(model, (x,), strict=False)
        prepared = prepare_pt2e(fp32.module(), XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)))
        prepared(x)
        int8 = torch.export.export(convert_pt2e(prepared), (x,), strict=False)
    for name, program in (("fp32", fp32), ("int8-dynamic", int8))[: 2 if with_int8 else 1]:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], generate_etrecord=True)
        et = edge.to_executorch()
        (folder / f"{name}.pte").write_bytes(et.buffer)
        et.get_etrecord().save(str(folder / f"{name}.etrecord"))
        out[name] = folder / f"{name}.pte"
    (folder / "input.bin").write_bytes(x.numpy().tobytes())
    out["input"] = folder / "input.bin"
    return out


def _iterations_ms(text: str, expected: int) -> list[float]:
    from android_bench.runner_log import parse_stderr

    parsed = parse_stderr(text, source="bench_runner")
    values = list(parsed.latencies_ms(expected_executions=expected))
    if len(values) != expected:
        raise BenchmarkError(f"expected {expected} iteration lines, got {len(values)}")
    return values


def run(*, quick: bool) -> list[Figure]:
    from android_bench.device import connect
    from android_bench.keys import ensure_adb_key
    from android_bench.native import build_runner
    from android_bench.profiling import analyse_etdump
    from android_bench.virtual import VirtualDevice

    arch, size = ("test_efficientnet", 64) if quick else ("efficientnet_b0", 224)
    rounds, executions = (2, 3) if quick else (25, 10)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp_name:
        tmp = Path(tmp_name)
        files = _export(arch, size, tmp, with_int8=not quick)
        runner = build_runner(tmp / "runner-cache")
        what = f"{arch} {size}x{size} FP32, batch 1, 1 thread, {executions} executions per call"

        # 1. native vs stand-in, both on the virtual device, same .pte and input bytes
        key = ensure_adb_key(tmp / "home" / ".android" / "adbkey", create=True)
        tmpdir = "/data/local/tmp"
        with VirtualDevice(tmp / "root", authorized_keys=Path(str(key) + ".pub")) as vd, \
                connect(vd.address, adb_key=key) as dev:
            dev.push(runner.binary, f"{tmpdir}/emobench/bin/executor_runner", mode=0o755)  # type: ignore[call-arg]
            dev.push(files["fp32"], f"{tmpdir}/b0.pte")
            dev.push(files["input"], f"{tmpdir}/input.bin")

            def on_device(binary: str) -> float:
                result = dev.shell([binary, "--model_path", f"{tmpdir}/b0.pte", "--inputs", f"{tmpdir}/input.bin",
                                    "--num_executions", str(executions), "--cpu_threads", "1",
                                    "--print_output=none"], timeout_s=600)
                return statistics.median(_iterations_ms(result.stderr, executions))

            samples = paired_rounds({"native": lambda: on_device(f"{tmpdir}/emobench/bin/executor_runner"),
                                     "stand-in": lambda: on_device(f"{tmpdir}/executor_runner")}, rounds=rounds)
        interval = paired_ratio_interval(samples["native"], samples["stand-in"])
        figures.append(interval_figure(
            "native runner / Python stand-in, per-image latency on the virtual device", interval,
            value=statistics.median(samples["native"]), reference=statistics.median(samples["stand-in"]), unit="ms",
            reference_label="stand-in ms", note=f"{what}; each round: each runner once, median of its Iteration "
                                                "lines; same .pte and input bytes"))

        # 2. profiling overhead: ETDump on / off, the native runner as a host process
        def direct(etdump: bool) -> float:
            argv = [str(runner.binary), "--model_path", str(files["fp32"]), "--inputs", str(files["input"]),
                    "--num_executions", str(executions), "--cpu_threads", "1", "--print_output", "none"]
            if etdump:
                argv += ["--etdump_path", str(tmp / "overhead.etdump")]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0:
                raise BenchmarkError(f"native runner failed ({proc.returncode}): {proc.stderr[-500:]}")
            return statistics.median(_iterations_ms(proc.stderr, executions))

        samples = paired_rounds({"on": lambda: direct(True), "off": lambda: direct(False)}, rounds=rounds)
        interval = paired_ratio_interval(samples["on"], samples["off"])
        figures.append(interval_figure(
            "profiling overhead: latency with ETDump on / off (native runner)", interval,
            value=statistics.median(samples["on"]), reference=statistics.median(samples["off"]), unit="ms",
            reference_label="ETDump off ms", target_max=None if quick else 1.15, note=what))

        # 3. profile coverage: operator times / Method::execute, per execution, FP32 and dynamic INT8
        for name in ("fp32", "int8-dynamic") if not quick else ("fp32",):
            dump = tmp / f"coverage-{name}.etdump"
            n = 15 if not quick else 10
            proc = subprocess.run([str(runner.binary), "--model_path", str(files[name]), "--inputs",
                                   str(files["input"]), "--num_executions", str(n + 1), "--cpu_threads", "1",
                                   "--print_output", "none", "--etdump_path", str(dump)],
                                  capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0 or not dump.is_file():
                raise BenchmarkError(f"native runner wrote no ETDump ({proc.returncode}): {proc.stderr[-500:]}")
            profile = analyse_etdump(dump, etrecord=files[name].with_suffix(".etrecord"), warmup=1)
            interval = median_interval(profile.coverage_per_run)
            figures.append(interval_figure(
                f"profile coverage, {name}: sum of operator times / execute time", interval,
                value=profile.profiled_median_ms, reference=profile.execute_median_ms, unit="ms",
                reference_label="Method::execute ms", target_min=None if quick else 0.9,
                basis="executions (operator sum and execute time paired within each)",
                note=f"{arch} {size}x{size} {name}; {len(profile.operators)} operator names, "
                     f"{sum(o.calls for o in profile.operators)} operator calls per execution; interval over "
                     f"{profile.runs} executions"))
    return figures


if __name__ == "__main__":
    main(run)
