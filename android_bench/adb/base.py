"""The one device interface (``Device``) and the logic every transport shares (``DeviceBase``).

A transport implements three primitives (run a command line, push a file, pull a file) plus
``reconnect`` and ``close``; ``DeviceBase`` builds the interface on them: quoting, a push checked by
the device's own ``sha256sum`` (one retry, then a loud failure), atomic pulls, properties, free space
and the device description (:mod:`android_bench.device_info`).
"""

from __future__ import annotations

import logging
import os
import re
import stat as stat_mod
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from android_bench.adb.commands import ShellResult, quote_command
from android_bench.adb.errors import DeviceCommandError, DeviceError, DeviceStorageError
from android_bench.device_info import DeviceInfo, collect_device_info
from emobench_common.fileio import sha256_file

log = logging.getLogger(__name__)


@runtime_checkable
class Device(Protocol):
    """What the harness needs from a phone (or the virtual device)."""

    serial: str

    def shell(self, args: Sequence[str] | str, *, timeout_s: float = 60, check: bool = True) -> ShellResult: ...
    def push(self, local: Path, remote: str, *, verify_sha256: bool = True) -> None: ...
    def pull(self, remote: str, local: Path) -> None: ...
    def getprop(self, name: str | None = None) -> str | dict[str, str]: ...
    def info(self) -> DeviceInfo: ...
    def exists(self, remote: str) -> bool: ...
    def sha256(self, remote: str) -> str: ...
    def free_bytes(self, remote_dir: str) -> int: ...
    def reconnect(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Device: ...
    def __exit__(self, *exc: object) -> None: ...




_PROP_RE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*?)\]$", re.MULTILINE | re.DOTALL)


class DeviceBase:
    """Shared logic (quoting, sha256-checked push, properties) over three transport primitives."""

    serial: str

    # -- transport primitives, per subclass
    def _run(self, cmd: str, timeout_s: float) -> ShellResult:
        raise NotImplementedError

    def _push_file(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        raise NotImplementedError

    def _pull_file(self, remote: str, local: Path, timeout_s: float) -> None:
        raise NotImplementedError

    def reconnect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- the interface
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.serial!r})"

    def shell(self, args: Sequence[str] | str, *, timeout_s: float = 60, check: bool = True) -> ShellResult:
        """Run a command line on the device.

        Args:
            args: a sequence of arguments (each quoted with shlex.quote) or a trusted constant string.
            timeout_s: the time limit for the whole command.
            check: raise :class:`DeviceCommandError` on a non-zero exit status.

        Raises:
            DeviceCommandError, DeviceTimeoutError, DeviceUnreachableError.
        """
        cmd = quote_command(args)
        log.debug("%s$ %s", self.serial, cmd)
        result = self._run(cmd, timeout_s)
        if check:
            result.check(cmd, device=self.serial)
        return result

    @staticmethod
    def _check_remote(remote: str) -> str:
        if not remote.startswith("/") or "\0" in remote or "\n" in remote:
            raise DeviceError(f"device path {remote!r} must be absolute and on one line",
                              hint="use a path under /data/local/tmp")
        return remote

    def push(self, local: Path, remote: str, *, verify_sha256: bool = True, mode: int | None = None,
             timeout_s: float = 600) -> None:
        """Copy a host file to the device, then check its sha256 there (one retry, then fail loudly).

        Raises:
            DeviceStorageError: no room on the device, or the checksum still differs after a retry.
        """
        local = Path(local)
        remote = self._check_remote(remote)
        if not local.is_file():
            raise DeviceError(f"cannot push {local}: not a file")
        size_bytes = local.stat().st_size
        file_mode = mode if mode is not None else (stat_mod.S_IMODE(local.stat().st_mode) or 0o644)
        expected = sha256_file(local) if verify_sha256 else None
        for attempt in (1, 2):
            try:
                self._push_file(local, remote, file_mode, timeout_s)
            except DeviceStorageError as exc:
                free = self._free_bytes_or_none(remote.rsplit("/", 1)[0] or "/")
                extra = f" ({free} bytes free there)" if free is not None else ""
                raise DeviceStorageError(
                    f"pushing {local} ({size_bytes} bytes) to {self.serial}:{remote} failed: {exc.message}{extra}",
                    hint="free space on the device (e.g. remove old runs under /data/local/tmp)") from exc
            if expected is None:
                return
            got = self.sha256(remote)
            if got == expected:
                return
            log.warning("sha256 mismatch after pushing %s to %s:%s (attempt %d): %s != %s",
                        local, self.serial, remote, attempt, got, expected)
        raise DeviceStorageError(
            f"{self.serial}:{remote} has sha256 {got} after two pushes of {local} (expected {expected})",
            hint="the transfer or the device storage corrupts data: check the cable/connection and free space")

    def pull(self, remote: str, local: Path, *, timeout_s: float = 600) -> None:
        """Copy a device file to the host (written atomically: temp file + rename)."""
        remote = self._check_remote(remote)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self._pull_file(remote, tmp, timeout_s)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def getprop(self, name: str | None = None) -> str | dict[str, str]:
        """One property's value ('' when unset), or all properties as a dict when ``name`` is None."""
        if name is not None:
            return self.shell(["getprop", name], timeout_s=15).stdout.strip()
        text = self.shell("getprop", timeout_s=15).stdout
        return {m["key"]: m["value"] for m in _PROP_RE.finditer(text)}

    def info(self) -> DeviceInfo:
        """Describe the device (see :class:`android_bench.device_info.DeviceInfo`)."""
        return collect_device_info(self)

    def exists(self, remote: str) -> bool:
        """Whether ``remote`` exists on the device."""
        return self.shell(["test", "-e", self._check_remote(remote)], check=False, timeout_s=15).exit_status == 0

    def sha256(self, remote: str) -> str:
        """The device's own ``sha256sum`` of a file."""
        out = self.shell(["sha256sum", self._check_remote(remote)], timeout_s=300).stdout.strip()
        digest = out.split()[0] if out else ""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise DeviceCommandError(f"unexpected sha256sum output from {self.serial} for {remote}: {out!r}")
        return digest

    def free_bytes(self, remote_dir: str) -> int:
        """Bytes available to us in the file system holding ``remote_dir`` (from ``df -k``)."""
        out = self.shell(["df", "-k", self._check_remote(remote_dir)], timeout_s=15).stdout
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            fields = lines[-1].split()
            return int(fields[3]) * 1024
        except (IndexError, ValueError):
            raise DeviceCommandError(f"cannot parse `df -k {remote_dir}` from {self.serial}: {out!r}") from None

    def _free_bytes_or_none(self, remote_dir: str) -> int | None:
        try:
            return self.free_bytes(remote_dir)
        except DeviceError:
            return None
