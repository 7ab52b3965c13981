"""What a device is: identity, SoC, ABIs, Android version, CPU cores, RAM, temperatures, battery.

Collected with a handful of ordinary shell commands (``getprop``, ``grep -Hs . <sysfs files>``,
``/proc/meminfo``, ``dumpsys battery``) that work without root on a phone. Anything the device does
not expose is left ``None``/empty rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from android_bench.adb.commands import ShellResult

_CPU_DIR = "/sys/devices/system/cpu"
_THERMAL_DIR = "/sys/class/thermal"


class ShellDevice(Protocol):
    """What describing a device needs of it (every :class:`android_bench.device.Device` has it)."""

    serial: str

    def shell(self, args: Sequence[str] | str, *, timeout_s: float = 60, check: bool = True) -> ShellResult: ...

    def getprop(self, name: str | None = None) -> str | dict[str, str]: ...


@dataclass(frozen=True)
class DeviceInfo:
    """A device's description, as stored next to every result from it."""

    serial: str
    manufacturer: str
    model: str
    soc_manufacturer: str
    soc_model: str
    board_platform: str
    hardware: str
    abis: tuple[str, ...]
    android_release: str
    sdk: int | None
    kernel: str
    cpu_cores: int
    cpu_max_freq_khz: tuple[int | None, ...]
    cpu_governors: tuple[str | None, ...]
    ram_bytes: int | None
    thermal_c: dict[str, float] = field(default_factory=dict)
    battery_level_pct: int | None = None
    battery_temp_c: float | None = None
    is_virtual: bool = False
    fingerprint: str = ""
    thermal_source: str = "unavailable"  # where temperatures come from: see telemetry_sources()
    freq_source: str = "unavailable"

    @property
    def abi(self) -> str:
        """The primary ABI ('' when unknown)."""
        return self.abis[0] if self.abis else ""

    @property
    def soc(self) -> str:
        """A one-line SoC description from whatever the device reports."""
        parts = [p for p in (self.soc_manufacturer, self.soc_model) if p]
        if not parts:
            parts = [p for p in (self.board_platform, self.hardware) if p]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        data = asdict(self)
        data["abis"] = list(self.abis)
        data["cpu_max_freq_khz"] = list(self.cpu_max_freq_khz)
        data["cpu_governors"] = list(self.cpu_governors)
        data["thermal_c"] = dict(self.thermal_c)
        data["soc"] = self.soc
        return data


def _grep_files(device: ShellDevice, patterns: list[str]) -> dict[str, str]:
    """path -> first line, for readable files matching shell globs (unreadable ones are skipped)."""
    # The globs are constants of ours and must stay unquoted for the device shell to expand them.
    result = device.shell("grep -Hs . " + " ".join(patterns), check=False, timeout_s=20)
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        path, sep, value = line.partition(":")
        if sep and path not in values:
            values[path] = value.strip()
    return values


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _parse_cpu_list(text: str) -> list[int]:
    cores: list[int] = []
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if lo.isdigit() and hi.isdigit():
                cores.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            cores.append(int(part))
    return cores


def _millideg_to_c(raw: str) -> float | None:
    value = _int_or_none(raw)
    if value is None:
        return None
    # Most zones report millidegrees; a few report whole degrees.
    return value / 1000.0 if abs(value) >= 1000 else float(value)


def read_temperatures_c(device: ShellDevice) -> dict[str, float]:
    """Thermal-zone temperatures in degrees C, keyed ``<zone type>`` (or ``thermal_zoneN``)."""
    files = _grep_files(device, [f"{_THERMAL_DIR}/thermal_zone*/type", f"{_THERMAL_DIR}/thermal_zone*/temp"])
    temps: dict[str, float] = {}
    zones = sorted({p.rsplit("/", 2)[-2] for p in files if p.endswith("/temp")},
                   key=lambda z: _int_or_none(z.removeprefix("thermal_zone")) or 0)
    for zone in zones:
        temp = _millideg_to_c(files.get(f"{_THERMAL_DIR}/{zone}/temp", ""))
        if temp is None:
            continue
        name = files.get(f"{_THERMAL_DIR}/{zone}/type") or zone
        if name in temps:
            name = f"{name}:{zone}"
        temps[name] = temp
    return temps


def read_cpu_freqs_khz(device: ShellDevice) -> dict[int, int]:
    """Current frequency of each online core in kHz (``scaling_cur_freq``), keyed by core number."""
    files = _grep_files(device, [f"{_CPU_DIR}/cpu[0-9]*/cpufreq/scaling_cur_freq"])
    freqs: dict[int, int] = {}
    for path, value in files.items():
        m = re.search(r"/cpu(\d+)/cpufreq/", path)
        khz = _int_or_none(value)
        if m and khz is not None:
            freqs[int(m.group(1))] = khz
    return dict(sorted(freqs.items()))


def _battery(device: ShellDevice) -> tuple[int | None, float | None]:
    result = device.shell(["dumpsys", "battery"], check=False, timeout_s=20)
    if result.exit_status != 0:
        return None, None
    level = re.search(r"^\s*level:\s*(-?\d+)", result.stdout, re.MULTILINE)
    temp = re.search(r"^\s*temperature:\s*(-?\d+)", result.stdout, re.MULTILINE)
    return (int(level.group(1)) if level else None,
            int(temp.group(1)) / 10.0 if temp else None)  # tenths of a degree


def _ram_bytes(device: ShellDevice) -> int | None:
    result = device.shell(["cat", "/proc/meminfo"], check=False, timeout_s=20)
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", result.stdout, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _is_virtual(props: dict[str, str]) -> bool:
    return (props.get("ro.emobench.virtual") == "1" or props.get("ro.kernel.qemu") == "1"
            or props.get("ro.boot.qemu") == "1" or props.get("ro.hardware", "") in ("ranchu", "goldfish", "cutf_cvm"))


def telemetry_sources(props: dict[str, str], *, is_virtual: bool, have_temps: bool,
                      have_freqs: bool) -> tuple[str, str]:
    """Where a device's temperatures and CPU frequencies come from: (thermal, frequency) source.

    'sensor' on a phone; on emobench's virtual device 'host sensor' where it passes the host's
    through (``ro.emobench.thermal_source`` / ``ro.emobench.cpu_freq_source`` = host) and 'profile
    constant' where it serves its profile's made-up values (as does an emulator); 'unavailable' when
    nothing can be read.
    """
    def one(prop: str, have: bool) -> str:
        if not have:
            return "unavailable"
        if not is_virtual:
            return "sensor"
        return "host sensor" if props.get(prop) == "host" else "profile constant"

    return one("ro.emobench.thermal_source", have_temps), one("ro.emobench.cpu_freq_source", have_freqs)


def collect_device_info(device: ShellDevice) -> DeviceInfo:
    """Ask the device for everything in :class:`DeviceInfo`."""
    props = device.getprop()
    assert isinstance(props, dict)
    abis = tuple(a for a in props.get("ro.product.cpu.abilist", "").split(",") if a)
    if not abis and props.get("ro.product.cpu.abi"):
        abis = (props["ro.product.cpu.abi"],)
    kernel = device.shell(["uname", "-r"], check=False, timeout_s=15).stdout.strip()
    possible = device.shell(["cat", f"{_CPU_DIR}/possible"], check=False, timeout_s=15).stdout
    cores = _parse_cpu_list(possible)
    files = _grep_files(device, [f"{_CPU_DIR}/cpu[0-9]*/cpufreq/cpuinfo_max_freq",
                                 f"{_CPU_DIR}/cpu[0-9]*/cpufreq/scaling_governor"])
    if not cores:
        cores = sorted({int(m.group(1)) for p in files if (m := re.search(r"/cpu(\d+)/", p))})
    max_freqs = tuple(_int_or_none(files.get(f"{_CPU_DIR}/cpu{c}/cpufreq/cpuinfo_max_freq")) for c in cores)
    governors = tuple(files.get(f"{_CPU_DIR}/cpu{c}/cpufreq/scaling_governor") for c in cores)
    level, battery_temp = _battery(device)
    temps = read_temperatures_c(device)
    thermal_source, freq_source = telemetry_sources(props, is_virtual=_is_virtual(props), have_temps=bool(temps),
                                                    have_freqs=bool(read_cpu_freqs_khz(device)))
    return DeviceInfo(
        serial=device.serial,
        manufacturer=props.get("ro.product.manufacturer", ""),
        model=props.get("ro.product.model", ""),
        soc_manufacturer=props.get("ro.soc.manufacturer", ""),
        soc_model=props.get("ro.soc.model", ""),
        board_platform=props.get("ro.board.platform", ""),
        hardware=props.get("ro.hardware", ""),
        abis=abis,
        android_release=props.get("ro.build.version.release", ""),
        sdk=_int_or_none(props.get("ro.build.version.sdk")),
        kernel=kernel,
        cpu_cores=len(cores),
        cpu_max_freq_khz=max_freqs,
        cpu_governors=governors,
        ram_bytes=_ram_bytes(device),
        thermal_c=temps,
        battery_level_pct=level,
        battery_temp_c=battery_temp,
        is_virtual=_is_virtual(props),
        fingerprint=props.get("ro.build.fingerprint", ""),
        thermal_source=thermal_source,
        freq_source=freq_source,
    )
