"""Running a real executable pushed to the virtual device: a host process started by the device's shell.

A file pushed under ``/data/local/tmp`` and made executable (an ELF for the host's machine, such as
emobench's native ``executor_runner``) runs as a real process with the rights of the user who started
``emobench device serve``: that is the price of running what a phone runs, so the device listens on
loopback only and checks RSA keys by default. Two confinements, the stronger one where it exists:

- with ``bwrap`` (Debian ``bubblewrap``) on PATH, the process runs in its own mount namespace (and
  network, PID and IPC namespaces): the host's tree read-only, the sandbox folder bound read-write at
  ``/data/local/tmp``, so device paths in its arguments and working directory are already right;
- without it, the working directory and every argument naming a ``/data/local/tmp`` path are mapped
  to the sandbox folder on the host, and an argument naming any other path (absolute, or escaping
  with ``..``) is refused before anything starts.

stdout and stderr stream to the shell's streams as the process writes them (shell v2 and the legacy
shell alike); the exit status is the process's, or 128 + the signal that killed it. When the adb
connection closes (the harness's timeout, a dropped client) the process group is killed. An ELF built
for another machine (arm64 on an x86 host) is refused as a phone's shell refuses one: ``not executable:
64-bit ELF file``, status 126.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from android_bench.virtual.fs import SANDBOX_PREFIX, FsError
from android_bench.virtual.shell.context import SH, Cancelled, Ctx

log = logging.getLogger(__name__)

# ELF e_machine of the host, by platform.machine().
_HOST_ELF_MACHINE = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "i386": 3, "i686": 3,
                     "armv7l": 40, "armv8l": 40, "riscv64": 243}
_KILL_GRACE_S = 2.0
CPU_MASK_ENV = "EMOBENCH_TASKSET_MASK"  # set by the virtual shell's taskset for the program it starts


class _Refused(Exception):
    def __init__(self, message: str, status: int = 126) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def elf_refusal(head: bytes) -> str | None:
    """Why an ELF header cannot run on this host (``not executable: 64-bit ELF file``), or None."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return "not executable: magic 7F454C46 not found"
    bits = {1: "32", 2: "64"}.get(head[4], "?")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    host = _HOST_ELF_MACHINE.get(platform.machine().lower())
    host_bits = "64" if platform.architecture()[0] == "64bit" else "32"
    if machine != host or bits != host_bits:
        return f"not executable: {bits}-bit ELF file"
    e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
    phnum_at = 56 if bits == "64" else 44
    phnum = int.from_bytes(head[phnum_at:phnum_at + 2], "little" if head[5] == 1 else "big")
    if e_type not in (2, 3) or phnum == 0:  # not an executable (an object file, a truncated header)
        return f"not executable: {bits}-bit ELF file"
    return None


def bwrap_path() -> str | None:
    """The ``bwrap`` binary when it is installed and not disabled with ``EMOBENCH_NO_BWRAP=1``."""
    if os.environ.get("EMOBENCH_NO_BWRAP", "") in ("1", "true", "yes"):
        return None
    return shutil.which("bwrap")


def _bwrap_argv(bwrap: str, sandbox_root: Path, device_cwd: str) -> list[str]:
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
    for entry in sorted(os.listdir("/")):
        full = "/" + entry
        if entry in ("proc", "dev", "data") or not os.path.lexists(full):
            continue
        if os.path.islink(full):
            argv += ["--symlink", os.readlink(full), full]
        elif os.path.isdir(full):
            argv += ["--ro-bind", full, full]
    argv += ["--proc", "/proc", "--dev", "/dev", "--dir", "/data", "--dir", "/data/local",
             "--bind", str(sandbox_root), SANDBOX_PREFIX, "--remount-ro", "/"]
    inside = device_cwd == SANDBOX_PREFIX or device_cwd.startswith(SANDBOX_PREFIX + "/")
    argv += ["--chdir", device_cwd if inside else "/"]
    return argv + ["--"]


def _map_token(token: str, ctx: Ctx) -> str:
    """One argument piece: a sandbox path becomes its host path; any other path is refused."""
    fs = ctx.state.fs
    looks_like_path = "/" in token or token in (".", "..")
    if not looks_like_path:
        return token
    device_path = fs.normalize(token, ctx.cwd)
    if device_path == SANDBOX_PREFIX or device_path.startswith(SANDBOX_PREFIX + "/"):
        try:
            node = fs.resolve(device_path)
        except FsError as exc:
            raise _Refused(f"{token}: {exc.strerror} (a link out of {SANDBOX_PREFIX})") from exc
        assert node.host_path is not None
        return str(node.host_path)
    raise _Refused(f"{token}: the emobench virtual device gives a host process only paths under "
                   f"{SANDBOX_PREFIX} (install bubblewrap for a read-only view of the rest)")


_FLAG_VALUE = re.compile(r"^(--?[A-Za-z0-9_][A-Za-z0-9_.-]*=)(.*)$", re.S)


def map_arguments(args: list[str], ctx: Ctx) -> list[str]:
    """Map the device paths in ``args`` to the sandbox on the host (``--flag=path`` and ``a,b`` lists too).

    Raises:
        _Refused: an argument names a path outside ``/data/local/tmp``.
    """
    mapped = []
    for arg in args:
        match = _FLAG_VALUE.match(arg)
        prefix, value = (match.group(1), match.group(2)) if match else ("", arg)
        pieces = value.split(",") if ("," in value and "/" in value) else [value]
        mapped.append(prefix + ",".join(_map_token(p, ctx) for p in pieces))
    return mapped


def _cpu_mask(ctx: Ctx) -> set[int] | None:
    mask = ctx.env.get(CPU_MASK_ENV)
    if not mask:
        return None
    bits = int(mask, 16)
    cpus = {i for i in range(os.cpu_count() or 1) if bits >> i & 1}
    return cpus or None


def run_native(host_binary: Path, device_path: str, argv: list[str], ctx: Ctx) -> int:
    """Run the sandbox executable ``host_binary`` (``device_path`` on the device) as a host process.

    Returns:
        Its exit status (128 + N when killed by signal N; 126 when it cannot run here).

    Raises:
        Cancelled: the connection closed while it ran (the process group was killed).
    """
    with open(host_binary, "rb") as fh:
        head = fh.read(64)
    refusal = elf_refusal(head)
    if refusal is not None:
        ctx.err(f"{SH}: {device_path}: {refusal}")
        return 126
    # The device's fault plan acts on a runner process as on the stand-in (FaultPlan.runner_fault):
    # counted per runner call, so a test can let N calls through before the fault hits.
    fault = ctx.state.runner_fault_now() if _is_runner_call(argv) else None
    if fault == "hang":  # it never returns: nothing starts, the shell holds until the connection closes
        ctx.cancel.wait()
        raise Cancelled()
    if fault == "crash":  # the shell's view of a runner killed by SIGSEGV (no process is started: a real
        # signal to a bwrap-wrapped process raced with the sandbox's own teardown and could hold the shell)
        ctx.err("Segmentation fault")
        return 139
    bwrap = bwrap_path()
    private_cwd: tempfile.TemporaryDirectory | None = None
    try:
        if bwrap:
            command = [*_bwrap_argv(bwrap, ctx.state.fs.root, ctx.cwd), device_path, *argv[1:]]
            host_cwd = str(ctx.state.fs.root)
        else:
            try:
                command = [str(host_binary), *map_arguments(argv[1:], ctx)]
            except _Refused as exc:
                ctx.err(f"{SH}: {device_path}: {exc.message}")
                return exc.status
            cwd_node = ctx.state.fs.resolve(ctx.cwd)
            if cwd_node.host_path is not None and cwd_node.host_path.is_dir():
                host_cwd = str(cwd_node.host_path)
            else:  # "/" and the synthetic tree: an empty private folder, never a host folder
                private_cwd = tempfile.TemporaryDirectory(prefix="emobench-vdev-cwd-")
                host_cwd = private_cwd.name
        return _supervise(command, host_cwd, ctx, argv0=os.path.basename(device_path))
    finally:
        if private_cwd is not None:
            private_cwd.cleanup()


def _is_runner_call(argv: list[str]) -> bool:
    """An ``executor_runner``-style command line (it names a model): the calls a runner fault counts."""
    return any(arg == "--model_path" or arg.startswith("--model_path=") for arg in argv[1:])


def _supervise(command: list[str], cwd: str, ctx: Ctx, *, argv0: str) -> int:
    cpus = _cpu_mask(ctx)
    device_cpus = ctx.state.cpu_set  # a device pinned with --cpus: its processes never leave that set (issue 16)
    if device_cpus is not None:
        if cpus is not None and not cpus & device_cpus:
            from android_bench.cpusets import format_cpu_list

            ctx.err(f"taskset: failed to set affinity: the mask names none of this device's CPUs "
                    f"({format_cpu_list(device_cpus)})")
            return 1
        cpus = cpus & device_cpus if cpus is not None else set(device_cpus)
    env = {k: v for k, v in ctx.env.items() if k != CPU_MASK_ENV}

    def preexec() -> None:  # runs in the child between fork and exec
        if cpus:
            os.sched_setaffinity(0, cpus)

    log.info("virtual device: starting host process %s", argv0)
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec)
    except OSError as exc:
        ctx.err(f"{SH}: {argv0}: {exc.strerror or exc}")
        return 126
    pumps = [threading.Thread(target=_pump, args=(stream, sink), daemon=True, name=f"vdev-{argv0}-{i}")
             for i, (stream, sink) in enumerate(((proc.stdout, ctx.stdout), (proc.stderr, ctx.stderr)))]
    for pump in pumps:
        pump.start()
    cancelled = False
    while True:
        try:
            proc.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            if ctx.cancel.is_set():
                cancelled = True
                _kill_group(proc)
                break
    proc.wait()
    for pump in pumps:
        pump.join(timeout=5)
    if cancelled:
        raise Cancelled()
    status = proc.returncode
    return 128 - status if status < 0 else status


def _pump(stream, sink) -> None:
    with contextlib.suppress(Exception):  # a closed connection: the supervisor kills the process
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            sink.write(chunk)
    with contextlib.suppress(OSError):
        stream.close()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


__all__ = ["CPU_MASK_ENV", "bwrap_path", "elf_refusal", "map_arguments", "run_native"]
