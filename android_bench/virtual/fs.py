"""The virtual device's file system.

``/data/local/tmp`` (the only place an app-less adb user may write on a phone) maps to a sandbox
folder on the host. A small read-only tree of ``/proc`` and ``/sys`` files answers what the harness
reads (CPU cores and frequencies, memory, thermal zones, battery). Everything else is either a
read-only directory or absent; writes outside the sandbox fail with the errors a phone gives.
``..`` is resolved on the device path before mapping, and the mapped host path is checked with
``realpath`` so a symlink placed in the sandbox cannot lead out of it.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SANDBOX_PREFIX = "/data/local/tmp"


class FsError(OSError):
    """An error with a phone-like message (``strerror``) for one device path."""

    def __init__(self, err: int, device_path: str) -> None:
        super().__init__(err, os.strerror(err), device_path)
        self.device_path = device_path

    def __str__(self) -> str:
        return f"{self.device_path}: {self.strerror}"


@dataclass(frozen=True)
class Node:
    """A resolved device path: a sandbox host path, a synthetic file, or a synthetic directory."""

    device_path: str
    host_path: Path | None = None
    content: Callable[[], bytes] | None = None
    is_dir: bool = False

    @property
    def writable(self) -> bool:
        return self.host_path is not None


class DeviceFS:
    """Maps device paths to the sandbox and a synthetic read-only tree."""

    def __init__(self, root: Path, synthetic: dict[str, Callable[[], bytes]],
                 read_only_dirs: tuple[str, ...] = ("/system", "/vendor", "/proc", "/sys", "/dev")) -> None:
        # Absolute: a host process the device starts runs in another working directory (and bwrap
        # binds the root by path), so a relative sandbox folder would point elsewhere there.
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_real = os.path.realpath(self.root)
        self._files = dict(synthetic)
        dirs = {"/", "/data", "/data/local", SANDBOX_PREFIX, *read_only_dirs}
        for path in self._files:
            parent = posixpath.dirname(path)
            while parent not in dirs:
                dirs.add(parent)
                parent = posixpath.dirname(parent)
        self._dirs = dirs

    @staticmethod
    def normalize(path: str, cwd: str = "/") -> str:
        """An absolute, ``..``-free device path."""
        if not path:
            raise FsError(errno.ENOENT, path)
        joined = path if path.startswith("/") else posixpath.join(cwd, path)
        norm = posixpath.normpath(joined)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        return norm

    def _host(self, device_path: str) -> Path | None:
        if device_path == SANDBOX_PREFIX:
            return self.root
        if device_path.startswith(SANDBOX_PREFIX + "/"):
            rel = device_path[len(SANDBOX_PREFIX) + 1:]
            host = os.path.join(self.root, rel)
            real = os.path.realpath(host)
            if real != self._root_real and not real.startswith(self._root_real + os.sep):
                raise FsError(errno.EACCES, device_path)
            return Path(host)
        return None

    def resolve(self, path: str, cwd: str = "/") -> Node:
        """The node for ``path`` (which may not exist yet if it is in the sandbox)."""
        device_path = self.normalize(path, cwd)
        host = self._host(device_path)
        if host is not None:
            return Node(device_path, host_path=host, is_dir=host.is_dir())
        if device_path in self._files:
            return Node(device_path, content=self._files[device_path])
        if device_path in self._dirs:
            return Node(device_path, is_dir=True)
        return Node(device_path)

    def exists(self, node: Node) -> bool:
        if node.host_path is not None:
            return node.host_path.exists()
        return node.content is not None or node.is_dir

    def writable_host_path(self, path: str, cwd: str = "/") -> Path:
        """The host path for writing ``path``; EROFS/EACCES outside the sandbox, as on a phone."""
        node = self.resolve(path, cwd)
        if node.host_path is None:
            if node.device_path.startswith(("/system", "/vendor", "/product")):
                raise FsError(errno.EROFS, node.device_path)
            raise FsError(errno.EACCES, node.device_path)
        return node.host_path

    def read_bytes(self, path: str, cwd: str = "/") -> bytes:
        node = self.resolve(path, cwd)
        if node.host_path is not None:
            if node.host_path.is_dir():
                raise FsError(errno.EISDIR, node.device_path)
            try:
                return node.host_path.read_bytes()
            except FileNotFoundError:
                raise FsError(errno.ENOENT, node.device_path) from None
            except PermissionError:
                raise FsError(errno.EACCES, node.device_path) from None
        if node.content is not None:
            return node.content()
        if node.is_dir:
            raise FsError(errno.EISDIR, node.device_path)
        raise FsError(errno.ENOENT, node.device_path)

    def listdir(self, path: str, cwd: str = "/") -> list[str]:
        node = self.resolve(path, cwd)
        if node.host_path is not None:
            if not node.host_path.exists():
                raise FsError(errno.ENOENT, node.device_path)
            if not node.host_path.is_dir():
                raise FsError(errno.ENOTDIR, node.device_path)
            return sorted(os.listdir(node.host_path))
        if not node.is_dir:
            raise FsError(errno.ENOTDIR if node.content else errno.ENOENT, node.device_path)
        prefix = node.device_path.rstrip("/") + "/"
        names = {p[len(prefix):].split("/", 1)[0] for p in (*self._files, *self._dirs)
                 if p.startswith(prefix) and p != node.device_path}
        return sorted(n for n in names if n)

    def stat(self, path: str, cwd: str = "/") -> tuple[int, int, int]:
        """(mode, size, mtime) like ``stat(2)``; mode 0 when absent."""
        node = self.resolve(path, cwd)
        if node.host_path is not None:
            try:
                st = os.stat(node.host_path)
            except OSError:
                return 0, 0, 0
            return st.st_mode, st.st_size, int(st.st_mtime)
        if node.content is not None:
            return 0o100444, len(node.content()), 0
        if node.is_dir:
            return 0o040555, 4096, 0
        return 0, 0, 0

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def total_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize
