"""ELF sniffing: which Android ABI a runner binary is built for, before it is pushed."""

from __future__ import annotations

import struct
from pathlib import Path

from android_bench.adb.errors import DeviceError

_ELF_MACHINES = {3: "x86", 40: "armeabi-v7a", 62: "x86_64", 183: "arm64-v8a"}


def elf_machine(path: Path) -> str:
    """The Android ABI an ELF binary is built for, from its header's ``e_machine``.

    Returns one of ``arm64-v8a``, ``armeabi-v7a``, ``x86_64``, ``x86``.

    Raises:
        DeviceError: not an ELF file, or a machine Android does not run.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        header = fh.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise DeviceError(f"{path} is not an ELF executable",
                          hint="bring an Android build of ExecuTorch's executor_runner")
    endian = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(endian + "H", header[18:20])
    try:
        return _ELF_MACHINES[machine]
    except KeyError:
        raise DeviceError(f"{path} is built for ELF machine {machine}, which no Android ABI runs",
                          hint="build executor_runner for arm64-v8a (or the device's ABI)") from None
