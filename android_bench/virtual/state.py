"""The virtual device's state: what every shell command, stream and the runner can see.

``DeviceState`` holds one device's sandboxed file system (with the synthetic ``/sys`` and ``/proc``
files a phone exposes), its system properties, its log buffer, and the ``FaultPlan`` a test set to
inject failures (dropped connections, slow replies, a full disk, a crashing or hanging runner,
hot thermal zones). It knows nothing of the ADB wire or of the shell that reads it.
"""

from __future__ import annotations

import itertools
import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from android_bench.virtual.fs import DeviceFS
from android_bench.virtual.logcat import LogBuffer
from android_bench.virtual.profiles import Profile

SH = "/system/bin/sh"
"""Device path of the shell (the interpreter in :mod:`android_bench.virtual.shell`)."""


@dataclass(frozen=True)
class FaultPlan:
    """Failures to inject, for testing the harness's error handling.

    Attributes:
        close_after_bytes: drop a connection once the device has sent this many bytes since the plan was
            set (once per plan).
        close_after_commands: drop the connection when the (N+1)-th stream since the plan was set is
            opened (once per plan).
        reply_delay_s: sleep this long before answering each OPEN and each WRTE we send.
        storage_free_bytes: pretend only this much room is left (df reports it; larger pushes fail
            with "No space left on device").
        runner_fault: ``"crash"`` (the runner dies with SIGSEGV, status 139: the stand-in after loading
            the model; for a native runner the shell reports the crash without starting it) or ``"hang"``
            (it never returns until the connection closes; a native runner is then not started at all).
        runner_fault_after_calls: the fault hits from the (N+1)-th runner call since the plan was set,
            so a test can arm it before a run starts and still let N calls succeed.
        temperatures_c: make every thermal zone read these temperatures (deg C) in turn: the k-th read
            of a zone's ``temp`` file since the plan was set gives the k-th value, the last one repeating
            (e.g. ``(80, 80, 30)``: hot for two readings, then cooled down). Empty: the normal readings.
    """

    close_after_bytes: int | None = None
    close_after_commands: int | None = None
    reply_delay_s: float = 0.0
    storage_free_bytes: int | None = None
    runner_fault: str | None = None
    runner_fault_after_calls: int = 0
    temperatures_c: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.runner_fault not in (None, "crash", "hang"):
            raise ValueError(f"runner_fault must be None, 'crash' or 'hang', not {self.runner_fault!r}")



# ------------------------------------------------------------------------------------------ device state
def _read_host(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _constant(text: str) -> Callable[[], bytes]:
    """A synthetic file that always reads ``text`` and a newline."""
    data = (text + "\n").encode()
    return lambda: data


class DeviceState:
    """Everything a shell command on the virtual device can see."""

    def __init__(self, root: Path, profile: Profile, runner_logging: str, faults: FaultPlan) -> None:
        self.profile = profile
        self.runner_logging = runner_logging
        self.faults = faults
        self._temp_reads_plan: FaultPlan | None = None
        self._temp_reads: dict[str, int] = {}
        self._runner_calls_plan: FaultPlan | None = None
        self._runner_calls = 0
        self._runner_calls_lock = threading.Lock()
        self.logcat = LogBuffer()
        self.machine = platform.machine()
        self.kernel_release = platform.release() + "-emobench-virtual"
        self.cpu_count = os.cpu_count() or 1
        self._pids = itertools.count(4000)
        self.properties = dict(profile.properties)
        cpu_source = "host" if os.path.exists("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") else "profile"
        thermal_source = "host" if any(Path("/sys/class/thermal").glob("thermal_zone*/temp")) else "profile"
        self.properties.update({"ro.emobench.cpu_freq_source": cpu_source,
                                "ro.emobench.thermal_source": thermal_source,
                                "ro.emobench.runner_logging": runner_logging,
                                "ro.serialno": "emobench-virtual"})
        self.fs = DeviceFS(root, self._synthetic_files(cpu_source, thermal_source))
        # CPUs everything the device runs is pinned to (``VirtualDevice(cpus=...)``); None: not pinned.
        self.cpu_set: frozenset[int] | None = None

    @property
    def shell_pid(self) -> int:
        return next(self._pids)

    def _synthetic_files(self, cpu_source: str, thermal_source: str) -> dict[str, Callable[[], bytes]]:
        files: dict[str, Callable[[], bytes]] = {}
        n = self.cpu_count
        cpu = self.profile.cpu

        def host_or(path: str, fallback: str) -> Callable[[], bytes]:
            return lambda: _read_host(path) or (fallback + "\n").encode()

        for name in ("possible", "present", "online"):
            files[f"/sys/devices/system/cpu/{name}"] = host_or(f"/sys/devices/system/cpu/{name}", f"0-{n - 1}")
        for c in range(n):
            base = f"/sys/devices/system/cpu/cpu{c}/cpufreq"
            for leaf, key, default in (("cpuinfo_max_freq", "max_freq_khz", 2400000),
                                       ("scaling_max_freq", "max_freq_khz", 2400000),
                                       ("cpuinfo_min_freq", "min_freq_khz", 300000),
                                       ("scaling_cur_freq", "cur_freq_khz", 2400000),
                                       ("scaling_governor", "governor", "schedutil")):
                fallback = str(cpu.get(key, default))
                files[f"{base}/{leaf}"] = (host_or(f"{base}/{leaf}", fallback) if cpu_source == "host"
                                           else _constant(fallback))
        if thermal_source == "host":
            for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
                files[f"/sys/class/thermal/{zone.name}/type"] = host_or(str(zone / "type"), "")
                files[f"/sys/class/thermal/{zone.name}/temp"] = self._fault_temp_or(
                    zone.name, host_or(str(zone / "temp"), ""))
        else:
            for i, spec in enumerate(self.profile.thermal_zones):
                files[f"/sys/class/thermal/thermal_zone{i}/type"] = _constant(str(spec.get("type", "virtual")))
                files[f"/sys/class/thermal/thermal_zone{i}/temp"] = self._fault_temp_or(
                    f"thermal_zone{i}", _constant(str(int(spec.get("temp_millic", 35000)))))
        battery = self.profile.battery
        files["/sys/class/power_supply/battery/capacity"] = lambda: f"{int(battery.get('level', 100))}\n".encode()
        files["/sys/class/power_supply/battery/temp"] = (
            lambda: f"{int(battery.get('temperature_tenths_c', 250))}\n".encode())
        files["/proc/cpuinfo"] = host_or("/proc/cpuinfo", "processor\t: 0\n")
        files["/proc/meminfo"] = host_or("/proc/meminfo", "MemTotal:        8000000 kB\n")
        files["/proc/version"] = lambda: f"Linux version {self.kernel_release} (emobench virtual device)\n".encode()
        files["/proc/loadavg"] = host_or("/proc/loadavg", "0.00 0.00 0.00 1/100 1")
        files[SH] = lambda: b""
        return files

    def _fault_temp_or(self, zone: str, normal: Callable[[], bytes]) -> Callable[[], bytes]:
        """A zone's temp file: the fault plan's temperatures in turn when it has any, else ``normal``."""

        def read() -> bytes:
            plan = self.faults
            temps = plan.temperatures_c
            if not temps:
                return normal()
            if self._temp_reads_plan is not plan:  # a new plan starts its sequence again
                self._temp_reads_plan, self._temp_reads = plan, {}
            k = self._temp_reads.get(zone, 0)
            self._temp_reads[zone] = k + 1
            return f"{round(temps[min(k, len(temps) - 1)] * 1000)}\n".encode()

        return read

    def runner_fault_now(self) -> str | None:
        """The runner fault for this call: counts runner calls per fault plan (see FaultPlan)."""
        plan = self.faults
        with self._runner_calls_lock:
            if self._runner_calls_plan is not plan:  # a new plan starts its count again
                self._runner_calls_plan, self._runner_calls = plan, 0
            self._runner_calls += 1
            return plan.runner_fault if self._runner_calls > plan.runner_fault_after_calls else None

    # -- storage
    def storage_free_bytes(self) -> int:
        limit = self.faults.storage_free_bytes
        real = self.fs.free_bytes()
        return min(real, limit) if limit is not None else real

    def storage_total_bytes(self) -> int:
        return self.fs.total_bytes()
