"""Running a file on the virtual device: what happens when argv[0] names a path in the sandbox.

The virtual device runs no host process: a file that starts with the built-in runner's marker
(``RUNNER_STUB_MAGIC``) runs the host implementation of ExecuTorch's ``executor_runner``
(:mod:`android_bench.virtual.runner`); an ELF binary or a script is refused with the status a
phone's shell gives (126), a missing file with 127.
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
        return run_executor_runner(argv, ctx)
    if head.startswith(b"\x7fELF"):
        ctx.err(f"{SH}: {path}: the emobench virtual device runs on the host CPU and cannot execute "
                f"binaries; run its built-in runner {ctx.state.profile.runner_path} instead")
        return 126
    ctx.err(f"{SH}: {path}: running script files is not supported by the virtual device")
    return 126
