"""Running a file on the virtual device: what happens when argv[0] names a path in the sandbox.

A file that starts with the built-in runner's marker (``RUNNER_STUB_MAGIC``) runs the Python
stand-in for ExecuTorch's ``executor_runner`` (:mod:`android_bench.virtual.runner`); an ELF binary
for the host's machine runs as a real host process (:mod:`android_bench.virtual.native_exec`:
in a bubblewrap mount namespace where installed, else with its paths mapped into the sandbox), an
ELF of another machine is refused with status 126 as a phone's shell refuses it; a script is
refused with 126, a missing file gives 127.
"""

from __future__ import annotations

import os

from android_bench.virtual.fs import Node
from android_bench.virtual.shell.context import SH, Ctx


def exec_file(node: Node, path: str, argv: list[str], ctx: Ctx) -> int:
    """Run the sandbox file ``node`` (named ``path`` on the command line) with ``argv``; its exit status."""
    # Imported here: the runner imports the shell's context, and importing any module of this
    # package first runs the package's __init__ (which imports this module).
    from android_bench.virtual.runner import RUNNER_STUB_MAGIC, run_executor_runner

    host = node.host_path
    if host is None or not host.exists():
        ctx.err(f"{SH}: {path}: inaccessible or not found")
        return 127
    if host.is_dir():
        ctx.err(f"{SH}: {path}: Is a directory")
        return 126
    if not os.stat(host).st_mode & 0o111:
        ctx.err(f"{SH}: {path}: Permission denied")
        return 126
    with open(host, "rb") as fh:
        head = fh.read(len(RUNNER_STUB_MAGIC))
    if head == RUNNER_STUB_MAGIC:
        if ctx.state.cpu_set is not None:  # a device pinned with --cpus: the thread running it too (issue 16)
            from android_bench.cpusets import pinned_thread

            with pinned_thread(ctx.state.cpu_set):
                return run_executor_runner(argv, ctx)
        return run_executor_runner(argv, ctx)
    if head.startswith(b"\x7fELF"):
        # A real executable (e.g. emobench's native executor_runner): a host process (issue 13).
        from android_bench.virtual.native_exec import run_native

        return run_native(host, path, argv, ctx)
    ctx.err(f"{SH}: {path}: running script files is not supported by the virtual device")
    return 126
