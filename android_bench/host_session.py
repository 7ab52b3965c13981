"""``host-cpu`` / ``host-cuda`` targets: the runtimes of ``export.runtimes`` in this process.

Each call is timed with ``time.perf_counter`` (between ``torch.cuda.synchronize()`` calls on the GPU);
the host's description, library versions, thermal zones and CPU frequencies go with the results.
Dynamic INT8 has no CUDA kernels and the ExecuTorch/lite runtimes are CPU-only: on host-cuda those
models are reported as not supported, with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from android_bench.inputs import PreparedInputs
from android_bench.outcomes import CellOutcome, TargetError, short_error
from android_bench.plan import AblationPlan, Experiment, ModelSpec, TargetSpec, affinity_cpus
from device_results.store import TargetRecord, Telemetry
from emobench_common.names import utc_now

if TYPE_CHECKING:
    from export.runtimes import HostRuntime

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    """Versions of the runtimes a host target uses."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "executorch", "onnxruntime", "timm", "numpy", "torchao"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def host_info(kind: str) -> dict:
    """Host description: OS, CPU model, cores, memory, and the GPU for host-cuda."""
    info: dict = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                  "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        m = re.search(r"^MemTotal:\s*(\d+)\s*kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        if m:
            info["ram_bytes"] = int(m.group(1)) * 1024
    if kind == "host-cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_bytes"] = int(props.total_memory)
        info["cuda"] = str(torch.version.cuda)
    return info


def read_host_temperatures_c() -> dict[str, float]:
    """Host thermal zones in deg C (empty where the host exposes none, e.g. in a container)."""
    temps: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        with contextlib.suppress(OSError, ValueError):
            name = (zone / "type").read_text().strip() or zone.name
            raw = int((zone / "temp").read_text().strip())
            temps[name if name not in temps else f"{name}:{zone.name}"] = raw / 1000 if abs(raw) >= 1000 else raw
    return temps


def read_host_cpu_freqs_khz() -> dict[str, int]:
    """Current host CPU frequencies in kHz by CPU number (empty where not exposed)."""
    freqs: dict[str, int] = {}
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        with contextlib.suppress(OSError, ValueError):
            freqs[path.parts[-3].removeprefix("cpu")] = int(path.read_text().strip())
    return dict(sorted(freqs.items(), key=lambda kv: int(kv[0])))


class HostSession:
    """``host-cpu`` / ``host-cuda``: runtimes in this process, timed call by call."""

    def __init__(self, target: TargetSpec, plan: AblationPlan) -> None:
        self.target, self.plan = target, plan
        self.device = "cuda" if target.kind == "host-cuda" else "cpu"
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise TargetError("target host-cuda: torch.cuda.is_available() is False on this machine",
                                  hint="drop --target host-cuda here, or run on a machine with an NVIDIA GPU")
        self._runtimes: dict[str, HostRuntime] = {}
        self._load_errors: dict[str, str] = {}
        self.inference_ms_total = 0.0  # every runtime call, warm-up included (for harness-overhead figures)
        self.transfer_s = 0.0
        self._old_affinity: set[int] | None = None
        if plan.affinity_mask and hasattr(os, "sched_setaffinity"):
            cpus = set(affinity_cpus(plan.affinity_mask)) & set(range(os.cpu_count() or 1))
            if not cpus:
                raise TargetError(f"affinity mask {plan.affinity_mask} names no CPU of this host")
            self._old_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, cpus)
        if plan.threads:
            import torch

            torch.set_num_threads(plan.threads)

    @property
    def how_obtained(self) -> str:
        if self.device == "cuda":
            return ("in-process Python runtime call on the GPU, timed with time.perf_counter between "
                    "torch.cuda.synchronize() calls (host-to-device copy of the batch included)")
        how = "in-process Python runtime call timed with time.perf_counter"
        if self.plan.affinity_mask:
            how += f"; process pinned with sched_setaffinity to mask {self.plan.affinity_mask}"
        return how

    def describe(self) -> TargetRecord:
        return TargetRecord(target_id=self.target.spec, kind=self.target.kind, is_virtual=False,
                            info=host_info(self.target.kind), library_versions=library_versions(),
                            threads=self.plan.threads, affinity_mask=self.plan.affinity_mask,
                            how_obtained=self.how_obtained,
                            thermal_source="host sensor" if read_host_temperatures_c() else "unavailable",
                            freq_source="host sensor" if read_host_cpu_freqs_khz() else "unavailable")

    def support(self, model: ModelSpec) -> str | None:
        """None when the model runs here, else why not."""
        if self.device == "cpu":
            return None
        if model.precision != "fp32":
            return (f"{model.precision} ({model.mode or 'quantized'}) has no CUDA kernels in PyTorch/ExecuTorch: "
                    "not supported on this target")
        if model.format in ("executorch", "torchscript-lite"):
            return f"{model.format} runs on the CPU only (XNNPACK / lite interpreter): not supported on this target"
        if model.format == "onnx":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime here has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
        return None

    def prepare(self, models: Sequence[ModelSpec], inputs: PreparedInputs | None) -> None:
        """Load every model's runtime once; a load failure fails that model's cells, not the run."""
        from export.runtimes import EagerRuntime, load_runtime

        for m in models:
            try:
                rt: HostRuntime
                if m.format == "eager":
                    rt = EagerRuntime.from_checkpoint(self.plan.model_path(m), device=self.device,
                                                      threads=self.plan.threads)
                else:
                    rt = load_runtime(self.plan.model_path(m), m.format, device=self.device, threads=self.plan.threads)
                self._runtimes[m.key] = rt
            except Exception as exc:  # a model that does not load fails its cells with the reason
                log.warning("%s: %s does not load: %s", self.target.spec, m.key, exc)
                self._load_errors[m.key] = f"{m.key} did not load on {self.target.spec}: {short_error(exc)}"

    def telemetry(self) -> Telemetry:
        return Telemetry(read_host_temperatures_c(), read_host_cpu_freqs_khz(), utc_now())

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def time_calls(self, model: ModelSpec, x: np.ndarray, *, warmup: int, repeats: int
                   ) -> tuple[tuple[float, ...], np.ndarray]:
        """Run ``model`` on ``x`` warmup + repeats times; return the timed latencies and the last logits."""
        if model.key in self._load_errors:
            raise TargetError(self._load_errors[model.key])
        rt = self._runtimes[model.key]
        out = None
        for _ in range(warmup):
            self._sync()
            t0 = time.perf_counter()
            out = rt.run(x)
            self._sync()
            self.inference_ms_total += (time.perf_counter() - t0) * 1e3
        latencies = []
        for _ in range(repeats):
            self._sync()
            t0 = time.perf_counter()
            out = rt.run(x)
            self._sync()
            latencies.append((time.perf_counter() - t0) * 1e3)
        self.inference_ms_total += sum(latencies)
        return tuple(latencies), np.asarray(out, dtype=np.float32)

    def run_cell(self, experiment: Experiment, model: ModelSpec, inputs: PreparedInputs) -> CellOutcome:
        if model.key in self._load_errors:
            return CellOutcome(error=self._load_errors[model.key])
        try:
            latencies, logits = self.time_calls(model, inputs.tensor(experiment.index), warmup=self.plan.warmup,
                                                repeats=self.plan.repeats)
        except Exception as exc:  # the model failed on this batch: record it, the run goes on
            return CellOutcome(error=f"{model.key} failed on experiment {experiment.index}: {short_error(exc)}",
                               runner_output=traceback.format_exc()[-4000:])
        return CellOutcome(latencies_ms=latencies, logits=logits)

    def recover(self) -> None:
        """Nothing to reconnect on the host."""

    def close(self) -> None:
        self._runtimes.clear()
        if self._old_affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self._old_affinity)
