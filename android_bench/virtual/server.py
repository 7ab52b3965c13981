"""The virtual device's lifecycle: a real ADB daemon protocol endpoint on 127.0.0.1.

``VirtualDevice`` binds a port, accepts connections (one :class:`~.connection.Connection` and reader
thread each), holds the :class:`~.state.DeviceState` every command sees, installs the built-in
``executor_runner`` in the sandbox, applies a :class:`~.state.FaultPlan` on request, and stops
cleanly (ending running commands, removing a temporary sandbox). The rooms it is built from:
:mod:`.wire` and :mod:`.auth` (the ADB transport and RSA keys), :mod:`.connection` and
:mod:`.streams` (handshake, routing, flow control), :mod:`.shell_service` and :mod:`.sync_service`
(what a stream runs), :mod:`.state` (what a command sees), :mod:`.shell` (the interpreter).
Nothing here starts a host process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from android_bench.virtual.auth import load_authorized_keys, parse_adb_public_key
from android_bench.virtual.connection import Connection
from android_bench.virtual.logcat import LogBuffer
from android_bench.virtual.profiles import load_profile
from android_bench.virtual.runner import RUNNER_STUB
from android_bench.virtual.state import DeviceState, FaultPlan
from emobench_common.errors import EmobenchError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = ["FaultPlan", "VirtualDevice", "load_authorized_keys", "parse_adb_public_key"]

log = logging.getLogger(__name__)


def _preload_runtime() -> None:
    with contextlib.suppress(Exception):
        import executorch.runtime  # noqa: F401


class VirtualDevice:
    """A virtual Android device serving the ADB protocol on 127.0.0.1.

    Use as a context manager::

        with VirtualDevice(auth=False) as vd:
            dev = android_bench.device.connect(vd.address)

    Args:
        root: the sandbox folder behind /data/local/tmp (a temporary folder, removed at stop, if None).
        port: TCP port on 127.0.0.1 (0 = a free one).
        profile: a shipped profile name or a JSON file.
        auth: require RSA authentication like a phone.
        authorized_keys: an adb_keys-style file of accepted public keys (default: the user's
            ~/.android/adbkey.pub, created if missing, like a phone that trusts this computer).
        accept_new_keys: accept a key the host offers (as if a person tapped "Allow").
        runner_logging: override the profile's runner logging (``stderr``, ``logcat``, ``none``).
        faults: failures to inject (see :class:`FaultPlan`).
        cpus: pin what the device runs to these CPUs: its executables (the native executor_runner)
            and the thread running the built-in one; ``emobench device serve --cpus`` also pins the
            whole serving process. The set is reported as ``getprop ro.emobench.cpu_set`` (without
            it: the CPUs the host process may use, and ``ro.emobench.cpu_pinned`` is 0).
    """

    def __init__(self, root: Path | None = None, *, port: int = 0, profile: str | Path = "default",
                 auth: bool = True, authorized_keys: Path | None = None, accept_new_keys: bool = False,
                 runner_logging: str | None = None, faults: FaultPlan | None = None,
                 cpus: Iterable[int] | None = None) -> None:
        self.profile = load_profile(profile)
        mode = runner_logging or self.profile.runner_logging
        if mode not in ("stderr", "logcat", "none"):
            raise ValueError(f"runner_logging must be stderr, logcat or none, not {mode!r}")
        self._tmp = None
        if root is None:
            self._tmp = tempfile.mkdtemp(prefix="emobench-vdev-")
            root = Path(self._tmp)
        self.root = Path(root)
        self.auth = auth
        self.accept_new_keys = accept_new_keys
        self.authorized_keys: list[RSAPublicKey] = []
        if auth:
            if authorized_keys is None:
                from android_bench.keys import ensure_adb_key

                authorized_keys = Path(str(ensure_adb_key(None)) + ".pub")
            self.authorized_keys = load_authorized_keys(authorized_keys)
        self.state = DeviceState(self.root, self.profile, mode, faults or FaultPlan())
        self._set_cpus(cpus)
        self._requested_port = port
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._commands = 0
        self._bytes_sent = 0
        self._bytes_fault_done = False
        self._commands_fault_done = False
        self._install_runner()

    # -- faults
    @property
    def faults(self) -> FaultPlan:
        return self.state.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self.state.faults = plan
        self._bytes_fault_done = False
        self._commands_fault_done = False
        self._commands = 0
        self._bytes_sent = 0

    def set_faults(self, **changes: Any) -> None:
        """Change some fault settings (see :class:`FaultPlan`)."""
        self.faults = replace(self.state.faults, **changes)

    def fault_bytes_hit(self, sent: int) -> bool:
        """Count ``sent`` bytes; True once when the plan's ``close_after_bytes`` is reached."""
        limit = self.state.faults.close_after_bytes
        if limit is None or self._bytes_fault_done:
            return False
        with self._lock:
            self._bytes_sent += sent
            if self._bytes_sent < limit:
                return False
            self._bytes_fault_done = True
            return True

    def fault_commands_hit(self) -> bool:
        """Count one opened stream; True once when the plan's ``close_after_commands`` is passed."""
        with self._lock:
            self._commands += 1
            limit = self.state.faults.close_after_commands
            if limit is None or self._commands_fault_done or self._commands <= limit:
                return False
            self._commands_fault_done = True
            return True

    # -- setup
    def _set_cpus(self, cpus: Iterable[int] | None) -> None:
        from android_bench.cpusets import CPU_SET_PROPERTY, available_cpus, format_cpu_list, parse_cpu_list

        if cpus is not None:
            wanted = frozenset(cpus)
            if not wanted:
                raise ValueError("cpus must name at least one CPU")
            # Checked against what this process may use, so a typo fails here rather than in a runner.
            self.state.cpu_set = parse_cpu_list(format_cpu_list(wanted))
        shown = self.state.cpu_set if self.state.cpu_set is not None else available_cpus()
        self.state.properties[CPU_SET_PROPERTY] = format_cpu_list(shown)
        self.state.properties["ro.emobench.cpu_pinned"] = "1" if self.state.cpu_set is not None else "0"

    @property
    def cpu_set(self) -> frozenset[int] | None:
        """The CPUs the device is pinned to (None when it is not pinned)."""
        return self.state.cpu_set

    def _install_runner(self) -> None:
        host = self.state.fs.writable_host_path(self.profile.runner_path)
        if not host.exists():
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(RUNNER_STUB)
            os.chmod(host, 0o755)

    @property
    def runner_path(self) -> str:
        """Device path of the built-in executor_runner."""
        return self.profile.runner_path

    @property
    def logcat(self) -> LogBuffer:
        return self.state.logcat

    @property
    def port(self) -> int:
        """The TCP port it serves on."""
        return self.listen_address[1]

    @property
    def listen_address(self) -> tuple[str, int]:
        """``(host, port)`` the listening socket is bound to (the host is always 127.0.0.1)."""
        if self._server is None:
            raise RuntimeError("the virtual device is not started")
        host, port = self._server.getsockname()[:2]
        return str(host), int(port)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: the target to pass to :func:`android_bench.device.connect`."""
        return f"127.0.0.1:{self.port}"

    @property
    def serial(self) -> str:
        """How ``adb`` and emobench name this device after ``adb connect``."""
        return self.address

    def start(self) -> VirtualDevice:
        """Bind 127.0.0.1 and start serving (returns self)."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", self._requested_port))
        except OSError as exc:
            server.close()
            raise EmobenchError(f"cannot listen on 127.0.0.1:{self._requested_port}: {exc.strerror}",
                                hint="pick another --port, or 0 for a free one") from exc
        server.listen(16)
        self._server = server
        self._thread = threading.Thread(target=self._accept_loop, name="vdev-accept", daemon=True)
        self._thread.start()
        # Importing executorch takes seconds; do it now, off the request path, so the first
        # executor_runner call answers as promptly as a phone's would.
        threading.Thread(target=_preload_runtime, name="vdev-preload", daemon=True).start()
        log.info("virtual device %s serving %s (sandbox %s)", self.profile.name, self.address, self.root)
        return self

    def _accept_loop(self) -> None:
        server = self._server
        assert server is not None
        while True:
            try:
                sock, peer = server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, peer)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.serve, name=f"vdev-conn-{peer[1]}", daemon=True).start()

    def forget_connection(self, conn: Connection) -> None:
        """A connection ended: stop tracking it."""
        with self._lock:
            self._conns.discard(conn)

    def drop_connections(self) -> None:
        """Close every client connection (as if the phone were unplugged for a moment)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.kill()

    def stop(self) -> None:
        """Stop serving, end running commands, and remove a temporary sandbox."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
            with contextlib.suppress(OSError):
                self._server.close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> VirtualDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
