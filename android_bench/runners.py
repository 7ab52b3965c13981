"""Targets: where a model runs and how its latency is obtained.

- ``host-cpu``: in-process runtimes from ``export.runtimes`` (eager FP32 from the checkpoint,
  TorchScript and its lite twin, ExecuTorch via ``executorch.runtime``, ONNX Runtime CPU), each call
  timed with ``time.perf_counter``.
- ``host-cuda`` (only where ``torch.cuda.is_available()``): eager FP32 and TorchScript FP32 on the
  GPU, timed between ``torch.cuda.synchronize()`` calls. Dynamic INT8 has no CUDA kernels and the
  ExecuTorch/lite runtimes are CPU-only: those cells are recorded as not supported, with the reason.
- ``android:<serial or host:port>``: ExecuTorch's ``executor_runner`` under ``adb shell``. One
  transfer per run (models, input files, and the runner when it is not already there, after
  checking its ELF machine against the device ABI), each file sha256-checked, free space checked
  first. Latencies come ONLY from the runner's own ``Iteration i of N: X ms`` lines (stderr, or
  logcat tag ``ExecuTorch`` cleared before each run); outputs are pulled and turned into predictions.

The host targets' session is ``android_bench.host_session.HostSession``; the outcome types are in
``android_bench.outcomes``. A session never decides what a failure means for the run: ``run_cell`` returns a failed
``CellOutcome`` for a model's own failure (the runner crashed on it, a runtime raised) and raises
``DeviceError`` when the target itself is lost, which the ablation handles.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from android_bench.host_session import (
    HostSession,
    host_info,
    library_versions,
    read_host_cpu_freqs_khz,
    read_host_temperatures_c,
)
from android_bench.inputs import PreparedInputs
from android_bench.outcomes import CellOutcome, TargetError, short_error, slug, softmax_top1
from android_bench.plan import AblationPlan, Experiment, ModelSpec, PlanError, TargetSpec
from device_results.store import TargetRecord, Telemetry
from emobench_common.fileio import sha256_file
from emobench_common.names import utc_now

if TYPE_CHECKING:
    from android_bench.device import Device

# names other modules import from here (the host side and the outcomes live in their own modules)
__all__ = ["BUILD_RUNNER_HINT", "DEFAULT_DEVICE_RUNNER", "DEVICE_BASE_DIR", "LOG_FORMS", "RUNNER_LABELS",
           "AndroidSession", "CellOutcome", "HostSession", "TargetError", "host_info", "library_versions",
           "open_session", "read_host_cpu_freqs_khz", "read_host_temperatures_c", "softmax_top1", "support_map"]

log = logging.getLogger(__name__)

DEVICE_BASE_DIR = "/data/local/tmp/emobench"
DEFAULT_DEVICE_RUNNER = "/data/local/tmp/executor_runner"
LOG_FORMS = ("auto", "stderr", "logcat")
BUILD_RUNNER_HINT = (
    "build ExecuTorch's executor_runner for the phone's ABI with the Android NDK, e.g. "
    "`cmake -DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake -DANDROID_ABI=arm64-v8a "
    "-DANDROID_PLATFORM=android-26 -DEXECUTORCH_BUILD_XNNPACK=ON -DEXECUTORCH_ENABLE_LOGGING=ON "
    "-DCMAKE_BUILD_TYPE=Release -Bcmake-android-out . && cmake --build cmake-android-out -j --target "
    "executor_runner`, then pass it with --runner cmake-android-out/executor_runner"
)


# Which executor_runner a device target ran (recorded with the target: library_versions["runner"]).
RUNNER_LABELS = {
    "native": "emobench's native executor_runner (C++, the installed ExecuTorch), a real process",
    "stand-in": "the virtual device's Python stand-in for executor_runner (executorch.runtime)",
    "user-supplied": "the executor_runner given with --runner",
    "device's own": "the executor_runner already on the device",
}


# --- android --------------------------------------------------------------------------------------


class AndroidSession:
    """``android:<serial or host:port>``: executor_runner under adb shell.

    Args:
        target: the target spec.
        plan: the plan (threads, affinity, warm-up, repeats, batch).
        run_id: names the run's folder on the device.
        log_dir: where each runner invocation's command and output are kept.
        runner: a local executor_runner to push (its ELF machine is checked first); None uses the
            one already at ``/data/local/tmp/executor_runner``.
        log_form: 'auto' (stderr, else logcat), 'stderr' or 'logcat'.
        runner_timeout_s: the longest one runner invocation may take.
        connect: how to open the device (``android_bench.device.connect``).
    """

    def __init__(self, target: TargetSpec, plan: AblationPlan, *, run_id: str, log_dir: Path,
                 runner: Path | None = None, log_form: str = "auto", runner_timeout_s: float = 600,
                 connect: Callable[[str], Device] | None = None, reconnect_attempts: int = 5) -> None:
        from android_bench.device import DeviceError
        from android_bench.device import connect as default_connect

        if log_form not in LOG_FORMS:
            raise TargetError(f"runner log form must be one of {', '.join(LOG_FORMS)}, got {log_form!r}")
        self.target, self.plan, self.run_id = target, plan, run_id
        self.log_dir = Path(log_dir)
        self.runner_local = Path(runner) if runner else None
        self.log_form = log_form
        self._form_seen: str | None = None if log_form == "auto" else log_form
        self.runner_timeout_s = runner_timeout_s
        self.reconnect_attempts = reconnect_attempts
        try:
            self.device: Device = (connect or default_connect)(target.address)
        except DeviceError as exc:
            raise TargetError(f"target {target.spec} is not reachable: {exc.message}",
                              hint=exc.hint or "check `adb devices`, the cable or `adb tcpip`, and the address") from exc
        self.info = self.device.info()
        self.runner_kind = "user-supplied" if runner else "device's own"
        if self.runner_local is None and self.info.is_virtual and self._virtual_runner_logs_to_stderr():
            # The virtual device runs emobench's native runner (built on demand) as a host process; the
            # Python stand-in already on it is the fallback where no cmake or compiler exists (issue 13).
            # A virtual device whose profile stands for a phone runner logging only to logcat (or not at
            # all) keeps its stand-in: the native runner logs to stderr like a Linux build.
            from android_bench.native import find_native_runner

            build = find_native_runner()
            if build is not None:
                self.runner_local, self.runner_kind = build.binary, "native"
            else:
                self.runner_kind = "stand-in"
        self.run_dir = f"{DEVICE_BASE_DIR}/runs/{slug(run_id)}"
        self.remote_runner = DEFAULT_DEVICE_RUNNER
        self.remote_models: dict[str, str] = {}
        self.remote_inputs: dict[tuple[int, int | None], str] = {}
        self._pushed: dict[str, tuple[Path, str]] = {}
        self.inference_ms_total = 0.0  # runner-reported, warm-up included
        self.transfer_s = 0.0
        self.transfer_bytes = 0

    def _virtual_runner_logs_to_stderr(self) -> bool:
        try:
            mode = self.device.getprop("ro.emobench.runner_logging")
        except Exception:  # noqa: BLE001 - an older virtual device without the property logs to stderr
            return True
        return mode in ("", "stderr")

    @property
    def how_obtained(self) -> str:
        parts = [f"{RUNNER_LABELS.get(self.runner_kind, self.runner_kind)} under `adb shell` ({self.remote_runner}); "
                 "a shell process is scheduled differently from a foreground app",
                 "latencies from the runner's own 'Iteration i of N: X ms' log lines"
                 + (f" read from {self._form_seen}" if self._form_seen else "")]
        if self.plan.threads:
            parts.append(f"--cpu_threads {self.plan.threads}")
        if self.plan.affinity_mask:
            parts.append(f"taskset {self.plan.affinity_mask}")
        return "; ".join(parts)

    def describe(self) -> TargetRecord:
        versions = {"runner_path": self.remote_runner, "runner": self.runner_kind,
                    "runner_label": RUNNER_LABELS.get(self.runner_kind, self.runner_kind)}
        if self.runner_local:
            versions["runner_sha256"] = sha256_file(self.runner_local)
        with contextlib.suppress(Exception):
            versions["runner_sha256_on_device"] = self.device.sha256(self.remote_runner)
        return TargetRecord(target_id=self.target.spec, kind="android", is_virtual=bool(self.info.is_virtual),
                            info=self.info.to_dict(), library_versions=versions, threads=self.plan.threads,
                            affinity_mask=self.plan.affinity_mask, how_obtained=self.how_obtained,
                            thermal_source=self.info.thermal_source, freq_source=self.info.freq_source)

    def support(self, model: ModelSpec) -> str | None:
        if model.format != "executorch":
            return (f"{model.format} is not an ExecuTorch program; a phone runs .pte files through executor_runner: "
                    "not supported on this target")
        return None

    # -- the one transfer
    def _remote_path_for(self, local: Path, sha: str) -> str:
        return f"{DEVICE_BASE_DIR}/models/{sha[:16]}_{slug(local.name)}"

    def _ensure_file(self, local: Path, remote: str, sha: str, *, mode: int | None = None) -> None:
        """Push unless the device already holds exactly this file (sha256-checked either way)."""
        dev = self.device
        if dev.exists(remote) and dev.sha256(remote) == sha:
            self._pushed[remote] = (local, sha)
            return
        t0 = time.perf_counter()
        dev.push(local, remote, verify_sha256=True, mode=mode)  # type: ignore[call-arg]  # Device.push lacks mode
        self.transfer_s += time.perf_counter() - t0
        self.transfer_bytes += local.stat().st_size
        self._pushed[remote] = (local, sha)

    def prepare(self, models: Sequence[ModelSpec], inputs: PreparedInputs) -> None:
        """Check the runner and free space, then push models, inputs and the runner once.

        Raises:
            TargetError: wrong runner ABI, no runner at all, too little storage.
        """
        from android_bench.device import elf_machine

        dev = self.device
        abis = tuple(self.info.abis)
        if self.runner_local is not None:
            if not self.runner_local.is_file():
                raise TargetError(f"--runner {self.runner_local} does not exist", hint=BUILD_RUNNER_HINT)
            abi = elf_machine(self.runner_local)
            if not abis:
                raise TargetError(f"{self.target.spec} reports no CPU ABI (ro.product.cpu.abilist and "
                                  f"ro.product.cpu.abi are empty), so --runner {self.runner_local} ({abi}) cannot "
                                  "be checked against it",
                                  hint=f"check `adb shell getprop ro.product.cpu.abilist` on the device; {abi} "
                                       f"must be one of its ABIs. Without --runner the device's own "
                                       f"{DEFAULT_DEVICE_RUNNER} is used")
            if abi not in abis:
                raise TargetError(f"{self.runner_local} is built for {abi}, but {self.target.spec} runs "
                                  f"{', '.join(abis)}", hint=BUILD_RUNNER_HINT)
            self.remote_runner = f"{DEVICE_BASE_DIR}/bin/executor_runner"
        elif not dev.exists(DEFAULT_DEVICE_RUNNER):
            raise TargetError(f"{self.target.spec} has no executor_runner at {DEFAULT_DEVICE_RUNNER} and none was given",
                              hint=BUILD_RUNNER_HINT)
        files: list[tuple[Path, str, str, int | None]] = []
        for m in models:
            local = self.plan.model_path(m)
            remote = self._remote_path_for(local, m.sha256)
            self.remote_models[m.key] = remote
            files.append((local, remote, m.sha256, 0o644))
        per_image = any(m.batch_size == 1 and self.plan.batch_size > 1 for m in models)
        for index, path in sorted(inputs.files.items()):
            if per_image:
                for pos in range(self.plan.batch_size):
                    local = inputs.image_file(index, pos)
                    remote = f"{self.run_dir}/inputs/{local.name}"
                    self.remote_inputs[(index, pos)] = remote
                    files.append((local, remote, sha256_file(local), 0o644))
            remote = f"{self.run_dir}/inputs/{path.name}"
            self.remote_inputs[(index, None)] = remote
            files.append((path, remote, inputs.sha256[index], 0o644))
        if self.runner_local is not None:
            files.append((self.runner_local, self.remote_runner, sha256_file(self.runner_local), 0o755))
        dev.shell(["mkdir", "-p", f"{DEVICE_BASE_DIR}/models", f"{DEVICE_BASE_DIR}/bin", f"{self.run_dir}/inputs",
                   f"{self.run_dir}/out"], timeout_s=30)
        need = sum(f[0].stat().st_size for f in files)
        free = dev.free_bytes(DEVICE_BASE_DIR)
        margin = 16 * 1024 * 1024
        if free < need + margin:
            raise TargetError(
                f"{self.target.spec} has {free / 1e6:.1f} MB free under {DEVICE_BASE_DIR}; the run needs "
                f"{need / 1e6:.1f} MB (+{margin / 1e6:.0f} MB margin) for models, inputs and the runner",
                hint="free space on the device (e.g. `adb shell rm -r /data/local/tmp/emobench/runs`)")
        for local, remote, sha, mode in files:
            self._ensure_file(local, remote, sha, mode=mode)
        log.info("%s: %d files ready (%d bytes pushed in %.2f s)", self.target.spec, len(files), self.transfer_bytes,
                 self.transfer_s)

    def recover(self) -> None:
        """Reconnect with bounded backoff and re-verify (re-push if needed) every file pushed.

        Raises:
            DeviceUnreachableError: the device did not come back.
        """
        from android_bench.device import DeviceError, DeviceUnreachableError, retry_with_backoff

        retry_with_backoff(self.device.reconnect, attempts=self.reconnect_attempts,
                           retry_on=(DeviceUnreachableError,))
        for remote, (local, sha) in list(self._pushed.items()):
            try:
                ok = self.device.exists(remote) and self.device.sha256(remote) == sha
            except DeviceError:
                ok = False
            if not ok:
                log.warning("%s: %s lost or changed after reconnect; pushing again", self.target.spec, remote)
                self.device.push(local, remote, verify_sha256=True)

    def telemetry(self) -> Telemetry:
        from android_bench.device_info import read_cpu_freqs_khz, read_temperatures_c

        temps = read_temperatures_c(self.device)
        freqs = read_cpu_freqs_khz(self.device)
        return Telemetry({str(k): float(v) for k, v in temps.items()}, {str(k): int(v) for k, v in freqs.items()},
                         utc_now())

    # -- one runner invocation
    def _runner_argv(self, model_remote: str, input_remote: str, output_remote: str, executions: int,
                     extra_args: Sequence[str] = ()) -> list[str]:
        argv: list[str] = []
        if self.plan.affinity_mask:
            argv += ["taskset", self.plan.affinity_mask]
        argv += [self.remote_runner, "--model_path", model_remote, "--inputs", input_remote,
                 "--output_file", output_remote, "--num_executions", str(executions)]
        if self.plan.threads:
            argv += ["--cpu_threads", str(self.plan.threads)]
        return argv + list(extra_args)

    def invoke_runner(self, model_remote: str, input_remote: str, output_remote: str, executions: int, *,
                      log_name: str, extra_args: Sequence[str] = ()) -> tuple[tuple[float, ...] | None, str, str, int]:
        """Run the runner once; return (latencies of all executions or None, error, combined output, status).

        Raises:
            NoTimingLinesError: the runner succeeded but printed no timing lines anywhere (logging off).
            DeviceError: the device is lost (the ablation reconnects and redoes the experiment).
        """
        from android_bench import runner_log

        dev = self.device
        use_logcat = self._form_seen in (None, "logcat")
        if use_logcat:
            dev.shell(["logcat", "-c"], timeout_s=30, check=False)
        from android_bench.device import DeviceTimeoutError, quote_command

        argv = self._runner_argv(model_remote, input_remote, output_remote, executions, extra_args)
        try:
            result = dev.shell(argv, timeout_s=self.runner_timeout_s, check=False)
        except DeviceTimeoutError as exc:
            output = f"$ {quote_command(argv)}\n{exc.message}\n"
            self._write_log(log_name, output)
            with contextlib.suppress(Exception):  # a hung shell stream may leave the connection unusable
                dev.reconnect()
            return None, f"executor_runner did not finish within {self.runner_timeout_s:g} s", output, -1
        logcat_text = ""
        parsed = runner_log.parse_stderr(result.stderr + "\n" + result.stdout,
                                         source=f"{self.target.spec} {log_name}")
        form = "stderr"
        if not parsed.iterations and use_logcat:
            logcat_text = dev.shell(["logcat", "-d", "-v", "threadtime", "-s", f"{runner_log.LOGCAT_TAG}:V"],
                                    timeout_s=60, check=False).stdout
            parsed = runner_log.parse_logcat(logcat_text, source=f"{self.target.spec} {log_name} (logcat)")
            form = "logcat"
        output = (f"$ {quote_command(argv)}\nexit status {result.exit_status}\n--- stdout\n{result.stdout}\n"
                  f"--- stderr\n{result.stderr}\n" + (f"--- logcat\n{logcat_text}\n" if logcat_text else ""))
        self._write_log(log_name, output)
        if result.exit_status != 0:
            errors = "; ".join(parsed.errors[-3:]) or (result.stderr or result.stdout).strip()[-500:]
            return None, f"executor_runner exited with status {result.exit_status}: {errors}", output, result.exit_status
        latencies = parsed.latencies_ms(expected_executions=executions)  # raises NoTimingLinesError when none
        self.inference_ms_total += sum(latencies)
        if self._form_seen is None:
            self._form_seen = form
        return latencies, "", output, 0

    def _write_log(self, log_name: str, text: str) -> None:
        path = self.log_dir / f"{log_name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, errors="replace")

    def _pull_logits(self, output_remote: str, rows: int) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="emobench-out-") as tmp:
            local = Path(tmp) / "out-0.bin"
            self.device.pull(f"{output_remote}-0.bin", local)
            data = np.fromfile(local, dtype="<f4")
        k = len(self.plan.input_spec.class_names)
        if data.size != rows * k:
            raise ValueError(f"runner output {output_remote}-0.bin holds {data.size} floats, expected {rows}x{k}")
        return data.reshape(rows, k).astype(np.float32)

    def run_cell(self, experiment: Experiment, model: ModelSpec, inputs: PreparedInputs) -> CellOutcome:
        from android_bench.device import DeviceCommandError

        w, r = self.plan.warmup, self.plan.repeats
        name = f"exp{experiment.index:03d}_{slug(model.key)}"
        per_image = model.batch_size == 1 and self.plan.batch_size > 1
        jobs = ([(self.remote_inputs[(experiment.index, p)], f"{name}_img{p:02d}", 1)
                 for p in range(self.plan.batch_size)] if per_image
                else [(self.remote_inputs[(experiment.index, None)], name, self.plan.batch_size)])
        totals = np.zeros(r)
        logits = []
        outputs = []
        for input_remote, log_name, rows in jobs:
            out_remote = f"{self.run_dir}/out/{log_name}"
            latencies, error, output, _status = self.invoke_runner(
                self.remote_models[model.key], input_remote, out_remote, w + r, log_name=log_name)
            outputs.append(output)
            if latencies is None:
                return CellOutcome(error=f"{model.key} on experiment {experiment.index}: {error}",
                                   runner_output=output[-8000:], log_path=str(self.log_dir / f"{log_name}.log"))
            totals += np.asarray(latencies[w:])
            try:
                logits.append(self._pull_logits(out_remote, rows))
            except (ValueError, DeviceCommandError) as exc:
                return CellOutcome(error=f"{model.key} on experiment {experiment.index}: {short_error(exc)}",
                                   runner_output=output[-8000:], log_path=str(self.log_dir / f"{log_name}.log"))
        return CellOutcome(latencies_ms=tuple(float(v) for v in totals), logits=np.concatenate(logits),
                           log_path=str(self.log_dir / f"{jobs[0][1]}.log"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.device.close()


def open_session(target: TargetSpec, plan: AblationPlan, *, run_id: str, log_dir: Path,
                 runner: Path | None = None, log_form: str = "auto", runner_timeout_s: float = 600,
                 connect: Callable[[str], Device] | None = None) -> HostSession | AndroidSession:
    """Open the session for one target.

    Raises:
        TargetError: the target is unreachable or unusable here.
    """
    if target.kind in ("host-cpu", "host-cuda"):
        return HostSession(target, plan)
    if target.kind == "android":
        return AndroidSession(target, plan, run_id=run_id, log_dir=Path(log_dir) / slug(target.spec), runner=runner,
                              log_form=log_form, runner_timeout_s=runner_timeout_s, connect=connect)
    raise PlanError(f"unknown target kind {target.kind!r}")


def support_map(session: HostSession | AndroidSession, models: Sequence[ModelSpec]) -> Mapping[str, str | None]:
    """Model key -> None (runs here) or the reason it does not."""
    return {m.key: session.support(m) for m in models}
