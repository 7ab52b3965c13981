"""Built-in commands that work on text and values: echo, printf, test/[, head, tail, wc, grep, ...

Each is a typed :class:`~android_bench.virtual.shell.registry.Command` registered by name; they
behave like Android's toybox for the options the harness and the adb client use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from android_bench.virtual.fs import FsError
from android_bench.virtual.shell.context import Cancelled, Ctx
from android_bench.virtual.shell.lexer import ShellSyntaxError
from android_bench.virtual.shell.registry import command, parse_flags


@command("true")
def _true(argv: list[str], ctx: Ctx) -> int:
    return 0


@command("false")
def _false(argv: list[str], ctx: Ctx) -> int:
    return 1


@command("echo")
def _echo(argv: list[str], ctx: Ctx) -> int:
    args = argv[1:]
    newline = True
    while args and args[0] in ("-n", "-e", "-E"):
        if args[0] == "-n":
            newline = False
        args = args[1:]
    ctx.stdout.write(" ".join(args) + ("\n" if newline else ""))
    return 0


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "r": "\r", "a": "\a", "0": "\0", "e": "\x1b"}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), text)


@command("printf")
def _printf(argv: list[str], ctx: Ctx) -> int:
    if len(argv) < 2:
        ctx.err("printf: need format")
        return 1
    fmt, args = _unescape(argv[1]), argv[2:]
    specs = re.findall(r"%[-+ 0#]*\d*(?:\.\d+)?[sdiuxXfcb%]", fmt)
    n_args = len([s for s in specs if s != "%%"])
    out = []
    status = 0
    while True:
        chunk_args = args[:n_args] if n_args else []
        args = args[n_args:] if n_args else []
        it = iter(chunk_args)

        def sub(m: re.Match[str], it: Iterator[str] = it) -> str:
            nonlocal status
            spec = m.group(0)
            if spec == "%%":
                return "%"
            value = next(it, "")
            conv = spec[-1]
            if conv in "diuxX":
                try:
                    num = int(value or "0", 0)
                except ValueError:
                    ctx.err(f"printf: invalid number '{value}'")
                    status = 1
                    num = 0
                return (spec[:-1] + ("d" if conv in "iu" else conv)) % num
            if conv == "f":
                try:
                    return spec % float(value or "0")
                except ValueError:
                    status = 1
                    return spec % 0.0
            if conv == "b":
                return _unescape(value)
            if conv == "c":
                return value[:1]
            return spec % value
        out.append(re.sub(r"%[-+ 0#]*\d*(?:\.\d+)?[sdiuxXfcb%]", sub, fmt))
        if not args or not n_args:
            break
    ctx.stdout.write("".join(out))
    return status


def _test_expr(args: list[str], ctx: Ctx) -> bool:
    if not args:
        return False
    if args[0] == "!":
        return not _test_expr(args[1:], ctx)
    if len(args) == 1:
        return args[0] != ""
    fs = ctx.state.fs
    if len(args) == 2 and args[0].startswith("-"):
        op, arg = args
        if op in ("-z", "-n"):
            return (arg == "") == (op == "-z")
        node = fs.resolve(arg, ctx.cwd)
        exists = fs.exists(node)
        if op == "-e":
            return exists
        if op == "-d":
            return exists and node.is_dir
        if op == "-f":
            return exists and not node.is_dir
        mode, size, _ = fs.stat(arg, ctx.cwd)
        if op == "-s":
            return exists and size > 0
        if op == "-r":
            return exists
        if op == "-w":
            return exists and node.writable
        if op == "-x":
            return exists and bool(mode & 0o111)
        raise ShellSyntaxError(f"test: unknown operator {op}")
    if len(args) == 3:
        a, op, b = args
        if op == "=" or op == "==":
            return a == b
        if op == "!=":
            return a != b
        try:
            x, y = int(a), int(b)
        except ValueError:
            raise ShellSyntaxError(f"test: integer expression expected: {a} {b}") from None
        return {"-eq": x == y, "-ne": x != y, "-lt": x < y, "-le": x <= y, "-gt": x > y, "-ge": x >= y}[op]
    if "-a" in args:
        i = args.index("-a")
        return _test_expr(args[:i], ctx) and _test_expr(args[i + 1:], ctx)
    if "-o" in args:
        i = args.index("-o")
        return _test_expr(args[:i], ctx) or _test_expr(args[i + 1:], ctx)
    raise ShellSyntaxError("test: too many arguments")


@command("test", "[")
def _test(argv: list[str], ctx: Ctx) -> int:
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            ctx.err("[: missing ]")
            return 2
        args = args[:-1]
    try:
        return 0 if _test_expr(args, ctx) else 1
    except (ShellSyntaxError, KeyError) as exc:
        ctx.err(str(exc))
        return 2


@command("pwd")
def _pwd(argv: list[str], ctx: Ctx) -> int:
    ctx.stdout.write(ctx.cwd + "\n")
    return 0


@command("sleep")
def _sleep(argv: list[str], ctx: Ctx) -> int:
    try:
        seconds = float(argv[1])
    except (IndexError, ValueError):
        ctx.err("sleep: need a number")
        return 1
    if ctx.cancel.wait(seconds):
        raise Cancelled()
    return 0


@command("head", "tail")
def _head_tail(argv: list[str], ctx: Ctx) -> int:
    args = argv[1:]
    count = 10
    files: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "-n" and i + 1 < len(args):
            count = int(args[i + 1])
            i += 2
            continue
        if re.fullmatch(r"-n?\d+", args[i]):
            count = int(args[i].lstrip("-n"))
            i += 1
            continue
        files.append(args[i])
        i += 1
    status = 0
    for k, path in enumerate(files or ["-"]):
        try:
            data = ctx.stdin.read_all() if path == "-" else ctx.state.fs.read_bytes(path, ctx.cwd)
        except FsError as exc:
            ctx.err(f"{argv[0]}: {path}: {exc.strerror}")
            status = 1
            continue
        lines = data.splitlines(keepends=True)
        chosen = lines[:count] if argv[0] == "head" else lines[-count:] if count else []
        if len(files) > 1:
            ctx.stdout.write(("\n" if k else "") + f"==> {path} <==\n")
        ctx.stdout.write(b"".join(chosen))
    return status


@command("wc")
def _wc(argv: list[str], ctx: Ctx) -> int:
    flags, files = parse_flags(argv, "clw")
    status = 0
    for path in files or ["-"]:
        try:
            data = ctx.stdin.read_all() if path == "-" else ctx.state.fs.read_bytes(path, ctx.cwd)
        except FsError as exc:
            ctx.err(f"wc: {path}: {exc.strerror}")
            status = 1
            continue
        counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
        shown = [str(counts[f]) for f in "lwc" if f in flags] or [str(counts[f]) for f in "lwc"]
        ctx.stdout.write(" ".join(shown) + ("" if path == "-" else f" {path}") + "\n")
    return status


@command("grep")
def _grep(argv: list[str], ctx: Ctx) -> int:
    args = argv[1:]
    flags: set[str] = set()
    pattern: str | None = None
    files: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-e" and i + 1 < len(args):
            pattern = args[i + 1]
            i += 2
            continue
        if a.startswith("-") and len(a) > 1 and all(c in "HhsivcqEFnlw" for c in a[1:]):
            flags.update(a[1:])
        elif pattern is None:
            pattern = a
        else:
            files.append(a)
        i += 1
    if pattern is None:
        ctx.err("grep: no pattern")
        return 2
    try:
        regex = re.compile(re.escape(pattern) if "F" in flags else pattern, re.IGNORECASE if "i" in flags else 0)
    except re.error as exc:
        ctx.err(f"grep: bad regex: {exc}")
        return 2
    show_name = "H" in flags or (len(files) > 1 and "h" not in flags)
    matched = False
    status_err = False
    for path in files or ["-"]:
        try:
            data = ctx.stdin.read_all() if path == "-" else ctx.state.fs.read_bytes(path, ctx.cwd)
        except FsError as exc:
            if "s" not in flags:
                ctx.err(f"grep: {path}: {exc.strerror}")
            status_err = True
            continue
        count = 0
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if bool(regex.search(line)) != ("v" in flags):
                count += 1
                matched = True
                if "q" in flags:
                    return 0
                if "c" not in flags and "l" not in flags:
                    prefix = (f"{path}:" if show_name else "") + (f"{n}:" if "n" in flags else "")
                    ctx.stdout.write(prefix + line + "\n")
        if "c" in flags:
            ctx.stdout.write((f"{path}:" if show_name else "") + f"{count}\n")
        elif "l" in flags and count:
            ctx.stdout.write(path + "\n")
    if status_err and not matched:
        return 2
    return 0 if matched else 1
