"""Built-in commands on the sandboxed file system: cat, ls, rm, mkdir, chmod, cp/mv, *sum, df, stat, ...

Each is a typed :class:`~android_bench.virtual.shell.registry.Command`; paths resolve through the
device's :class:`~android_bench.virtual.fs.DeviceFS`, so writes outside ``/data/local/tmp`` fail as
on a phone.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat as stat_mod
import time

from android_bench.virtual.fs import FsError
from android_bench.virtual.shell.context import Ctx
from android_bench.virtual.shell.registry import COMMANDS, Command, command, parse_flags


@command("cat")
def _cat(argv: list[str], ctx: Ctx) -> int:
    _, files = parse_flags(argv, "uv")
    if not files:
        ctx.stdout.write(ctx.stdin.read_all())
        return 0
    status = 0
    for path in files:
        if path == "-":
            ctx.stdout.write(ctx.stdin.read_all())
            continue
        try:
            node = ctx.state.fs.resolve(path, ctx.cwd)
            if node.host_path is not None and node.host_path.is_file():
                with open(node.host_path, "rb") as fh:
                    while chunk := fh.read(1 << 16):
                        ctx.stdout.write(chunk)
            else:
                ctx.stdout.write(ctx.state.fs.read_bytes(path, ctx.cwd))
        except FsError as exc:
            ctx.err(f"cat: {path}: {exc.strerror}")
            status = 1
    return status


def _mode_string(mode: int) -> str:
    kind = "d" if stat_mod.S_ISDIR(mode) else "-"
    bits = ""
    for shift in (6, 3, 0):
        part = (mode >> shift) & 7
        bits += ("r" if part & 4 else "-") + ("w" if part & 2 else "-") + ("x" if part & 1 else "-")
    return kind + bits


@command("ls")
def _ls(argv: list[str], ctx: Ctx) -> int:
    flags, paths = parse_flags(argv, "laAd1hRFs")
    paths = paths or ["."]
    fs = ctx.state.fs
    status = 0
    for path in paths:
        node = fs.resolve(path, ctx.cwd)
        if not fs.exists(node):
            ctx.err(f"ls: {path}: No such file or directory")
            status = 1
            continue
        if node.is_dir and "d" not in flags:
            try:
                names = fs.listdir(path, ctx.cwd)
            except FsError as exc:
                ctx.err(f"ls: {path}: {exc.strerror}")
                status = 1
                continue
            if "a" not in flags and "A" not in flags:
                names = [n for n in names if not n.startswith(".")]
            if len(paths) > 1:
                ctx.stdout.write(f"{path}:\n")
            entries = [(n, posixpath.join(node.device_path, n)) for n in names]
        else:
            entries = [(path, node.device_path)]
        for name, full in entries:
            if "l" in flags:
                mode, size, mtime = fs.stat(full)
                stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))
                ctx.stdout.write(f"{_mode_string(mode)} 1 shell shell {size:>8} {stamp} {name}\n")
            else:
                ctx.stdout.write(name + "\n")
    return status


@command("rm")
def _rm(argv: list[str], ctx: Ctx) -> int:
    flags, paths = parse_flags(argv, "rRfv")
    fs = ctx.state.fs
    status = 0
    if not paths and "f" not in flags:
        ctx.err("rm: Need 1 argument")
        return 1
    for path in paths:
        try:
            host = fs.writable_host_path(path, ctx.cwd)
        except FsError as exc:
            ctx.err(f"rm: {path}: {exc.strerror}")
            status = 1
            continue
        if host == fs.root:
            ctx.err(f"rm: {path}: Permission denied")
            status = 1
            continue
        if not os.path.lexists(host):
            if "f" not in flags:
                ctx.err(f"rm: {path}: No such file or directory")
                status = 1
            continue
        if host.is_dir() and not host.is_symlink():
            if not flags & {"r", "R"}:
                ctx.err(f"rm: {path}: Is a directory")
                status = 1
                continue
            shutil.rmtree(host)
        else:
            host.unlink()
    return status


@command("rmdir")
def _rmdir(argv: list[str], ctx: Ctx) -> int:
    _, paths = parse_flags(argv, "p")
    status = 0
    for path in paths:
        try:
            ctx.state.fs.writable_host_path(path, ctx.cwd).rmdir()
        except (FsError, OSError) as exc:
            ctx.err(f"rmdir: {path}: {exc.strerror}")
            status = 1
    return status


@command("mkdir")
def _mkdir(argv: list[str], ctx: Ctx) -> int:
    flags, paths = parse_flags(argv, "pv")
    status = 0
    for path in paths:
        try:
            host = ctx.state.fs.writable_host_path(path, ctx.cwd)
            if "p" in flags:
                host.mkdir(parents=True, exist_ok=True)
            else:
                host.mkdir()
        except FsError as exc:
            ctx.err(f"mkdir: {path}: {exc.strerror}")
            status = 1
        except FileExistsError:
            ctx.err(f"mkdir: {path}: File exists")
            status = 1
        except FileNotFoundError:
            ctx.err(f"mkdir: {path}: No such file or directory")
            status = 1
    return status


@command("touch")
def _touch(argv: list[str], ctx: Ctx) -> int:
    _, paths = parse_flags(argv, "ac")
    status = 0
    for path in paths:
        try:
            ctx.state.fs.writable_host_path(path, ctx.cwd).touch()
        except (FsError, OSError) as exc:
            ctx.err(f"touch: {path}: {exc.strerror}")
            status = 1
    return status


@command("chmod")
def _chmod(argv: list[str], ctx: Ctx) -> int:
    flags, args = parse_flags(argv, "Rfv")
    if len(args) < 2:
        ctx.err("chmod: Need 2 arguments")
        return 1
    mode_text, paths = args[0], args[1:]
    status = 0
    for path in paths:
        try:
            host = ctx.state.fs.writable_host_path(path, ctx.cwd)
            current = stat_mod.S_IMODE(os.stat(host).st_mode)
            if re.fullmatch(r"[0-7]{1,4}", mode_text):
                new = int(mode_text, 8)
            else:
                new = current
                for clause in mode_text.split(","):
                    m = re.fullmatch(r"([ugoa]*)([+\-=])([rwx]*)", clause)
                    if not m:
                        ctx.err(f"chmod: bad mode '{mode_text}'")
                        return 1
                    who = m.group(1) or "a"
                    bits = sum({"r": 4, "w": 2, "x": 1}[c] for c in m.group(3))
                    mask = sum({"u": bits << 6, "g": bits << 3, "o": bits}[w] for w in
                               ("ugo" if "a" in who else who))
                    new = new | mask if m.group(2) == "+" else new & ~mask if m.group(2) == "-" else mask
            os.chmod(host, new)
        except FsError as exc:
            ctx.err(f"chmod: {path}: {exc.strerror}")
            status = 1
        except FileNotFoundError:
            ctx.err(f"chmod: {path}: No such file or directory")
            status = 1
    return status


@command("mv", "cp")
def _mv_cp(argv: list[str], ctx: Ctx) -> int:
    flags, args = parse_flags(argv, "fnrRpa")
    if len(args) < 2:
        ctx.err(f"{argv[0]}: Need 2 arguments")
        return 1
    fs = ctx.state.fs
    try:
        dst = fs.writable_host_path(args[-1], ctx.cwd)
        for src_path in args[:-1]:
            node = fs.resolve(src_path, ctx.cwd)
            target = dst / posixpath.basename(node.device_path) if dst.is_dir() else dst
            if argv[0] == "mv":
                os.replace(fs.writable_host_path(src_path, ctx.cwd), target)
            elif node.host_path is not None and node.host_path.is_dir():
                if not flags & {"r", "R", "a"}:
                    ctx.err(f"cp: {src_path}: Is a directory (use -r)")
                    return 1
                shutil.copytree(node.host_path, target)
            else:
                target.write_bytes(fs.read_bytes(src_path, ctx.cwd))
    except (FsError, OSError) as exc:
        ctx.err(f"{argv[0]}: {exc}")
        return 1
    return 0


def _digest(name: str) -> Command:
    """``<name>sum``: one hash line per file (``-`` or none: standard input)."""

    def run(argv: list[str], ctx: Ctx) -> int:
        _, paths = parse_flags(argv, "bc")
        status = 0
        for path in paths or ["-"]:
            h = hashlib.new(name)
            try:
                if path == "-":
                    h.update(ctx.stdin.read_all())
                else:
                    node = ctx.state.fs.resolve(path, ctx.cwd)
                    if node.host_path is not None and node.host_path.is_file():
                        with open(node.host_path, "rb") as fh:
                            while chunk := fh.read(1 << 20):
                                h.update(chunk)
                    else:
                        h.update(ctx.state.fs.read_bytes(path, ctx.cwd))
            except FsError as exc:
                ctx.err(f"{name}sum: {path}: {exc.strerror}")
                status = 1
                continue
            ctx.stdout.write(f"{h.hexdigest()}  {path}\n")
        return status
    return run


for _algorithm in ("sha256", "md5", "sha1"):
    COMMANDS[f"{_algorithm}sum"] = _digest(_algorithm)


@command("df")
def _df(argv: list[str], ctx: Ctx) -> int:
    flags, paths = parse_flags(argv, "khP")
    state = ctx.state
    total, free = state.storage_total_bytes(), state.storage_free_bytes()
    used = max(0, total - free)
    ctx.stdout.write("Filesystem      1K-blocks     Used Available Use% Mounted on\n")
    for path in paths or ["/data"]:
        node = state.fs.resolve(path, ctx.cwd)
        if not state.fs.exists(node):
            ctx.err(f"df: {path}: No such file or directory")
            return 1
        pct = int(round(100 * used / total)) if total else 0
        ctx.stdout.write(f"/dev/block/dm-virtual {total // 1024:>10} {used // 1024:>8} {free // 1024:>9} "
                         f"{pct:>3}% /data\n")
    return 0


@command("stat")
def _stat(argv: list[str], ctx: Ctx) -> int:
    args = argv[1:]
    fmt = None
    if len(args) >= 2 and args[0] == "-c":
        fmt, args = args[1], args[2:]
    status = 0
    for path in args:
        mode, size, mtime = ctx.state.fs.stat(path, ctx.cwd)
        if mode == 0:
            ctx.err(f"stat: '{path}': No such file or directory")
            status = 1
            continue
        if fmt:
            text = fmt.replace("%s", str(size)).replace("%a", f"{stat_mod.S_IMODE(mode):o}") \
                .replace("%Y", str(mtime)).replace("%n", path)
            ctx.stdout.write(text + "\n")
        else:
            ctx.stdout.write(f"  File: {path}\n  Size: {size}\n Access: ({stat_mod.S_IMODE(mode):04o}/"
                             f"{_mode_string(mode)})\n")
    return status
