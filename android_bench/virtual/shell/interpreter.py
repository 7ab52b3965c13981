"""The shell's interpreter: runs parsed command lines against one device state.

It walks the parse tree (and-or lists, pipelines, sub-shells), applies redirections inside the
sandbox, expands ``$VAR``/``${VAR}``/``$?`` and globs, and dispatches each simple command: the
shell's own built-ins (``cd``, ``exit``, ``export``, ``sh``) here, the other built-ins through the
typed registry (:mod:`.registry`), and paths to :func:`.programs.exec_file`. Nothing here starts
a host process.
"""

from __future__ import annotations

import errno
import fnmatch
import posixpath
import re
import threading
from collections.abc import Callable
from typing import BinaryIO

from android_bench.virtual.fs import FsError
from android_bench.virtual.shell.context import SH, Cancelled, Ctx, ExitShell, Output, Stdin
from android_bench.virtual.shell.lexer import ShellSyntaxError, Word
from android_bench.virtual.shell.parser import AndOr, CommandNode, Group, Pipeline, Redirect, parse
from android_bench.virtual.shell.programs import exec_file
from android_bench.virtual.shell.registry import COMMANDS
from android_bench.virtual.state import DeviceState

Body = Callable[[Output, Output, Stdin], int]


class Shell:
    """Runs command lines against one device state. One instance per adb shell session."""

    def __init__(self, state: DeviceState, cancel: threading.Event | None = None) -> None:
        self.state = state
        self.cwd = "/"
        self.vars: dict[str, str] = {"PATH": "/system/bin:/data/local/tmp", "HOME": "/", "SHELL": SH,
                                     "TMPDIR": "/data/local/tmp", "USER": "shell"}
        self.status = 0
        self.cancel = cancel or threading.Event()

    @classmethod
    def for_command(cls, ctx: Ctx) -> Shell:
        """A new shell in ``ctx``'s device, directory and environment (``taskset``, ``command``, ``/system/bin/sh``)."""
        sub = cls(ctx.state, ctx.cancel)
        sub.cwd, sub.vars = ctx.cwd, dict(ctx.env)
        return sub

    def run(self, line: str, *, stdout: Callable[[bytes], object], stderr: Callable[[bytes], object],
            stdin: Stdin | None = None) -> int:
        """Run a command line; returns its exit status."""
        out, err = Output(stdout), Output(stderr)
        try:
            program = parse(line)
        except ShellSyntaxError as exc:
            err.write(f"{SH}: {exc}\n")
            return 2
        try:
            for item in program:
                self.status = self._and_or(item, stdin or Stdin(b""), out, err)
        except ExitShell as ex:
            self.status = ex.status
        except Cancelled:
            self.status = 130
        return self.status

    # -- structure
    def _and_or(self, node: AndOr, stdin: Stdin, out: Output, err: Output) -> int:
        status = self._pipeline(node.first, stdin, out, err)
        for op, pipe in node.rest:
            if (op == "&&" and status == 0) or (op == "||" and status != 0):
                status = self._pipeline(pipe, stdin, out, err)
        return status

    def _pipeline(self, node: Pipeline, stdin: Stdin, out: Output, err: Output) -> int:
        data_in = stdin
        status = 0
        for i, cmd in enumerate(node.commands):
            last = i == len(node.commands) - 1
            if last:
                status = self._command(cmd, data_in, out, err)
            else:
                buf = bytearray()
                status = self._command(cmd, data_in, Output(buf.extend), err)
                data_in = Stdin(bytes(buf))
        self.status = (0 if status else 1) if node.negate else status
        return self.status

    def _command(self, node: CommandNode, stdin: Stdin, out: Output, err: Output) -> int:
        if self.cancel.is_set():
            raise Cancelled()
        if isinstance(node, Group):
            sub = Shell(self.state, self.cancel)
            sub.cwd, sub.vars, sub.status = self.cwd, dict(self.vars), self.status
            body_items = node.body

            def body(o: Output, e: Output, s: Stdin) -> int:
                try:
                    status = 0
                    for item in body_items:
                        status = sub._and_or(item, s, o, e)
                    return status
                except ExitShell as ex:
                    return ex.status

            return self._with_redirects(node.redirects, stdin, out, err, body)
        try:
            argv: list[str] = []
            for w in node.words:
                argv.extend(self._expand(w, glob=True))
            assigns = {name: "".join(self._expand(w, glob=False)) for name, w in node.assigns}
        except ShellSyntaxError as exc:
            err.write(f"{SH}: {exc}\n")
            return 2
        if not argv:
            self.vars.update(assigns)
            return self._with_redirects(node.redirects, stdin, out, err, lambda o, e, s: 0)
        env = {**self.vars, **assigns}

        def run(o: Output, e: Output, s: Stdin) -> int:
            return self.exec_argv(argv, Ctx(self.state, self.cwd, env, s, o, e, self.cancel))

        return self._with_redirects(node.redirects, stdin, out, err, run)

    def _with_redirects(self, redirects: list[Redirect], stdin: Stdin, out: Output, err: Output,
                        body: Body) -> int:
        files: list[BinaryIO] = []
        fs = self.state.fs
        try:
            for r in redirects:
                if r.op == "2>&1":
                    err = out
                    continue
                if r.op in ("1>&2", ">&2"):
                    out = err
                    continue
                assert r.target is not None  # the parser gives every file redirection a target
                target = "".join(self._expand(r.target, glob=False))
                if r.op == "<":
                    stdin = Stdin(fs.read_bytes(target, self.cwd))
                    continue
                if target == "/dev/null":
                    sink = Output(lambda data: None)
                else:
                    host = fs.writable_host_path(target, self.cwd)
                    append = r.op in (">>", "2>>")
                    if host.is_dir():
                        raise FsError(errno.EISDIR, target)
                    if not host.parent.is_dir():
                        raise FsError(errno.ENOENT, target)
                    fh = open(host, "ab" if append else "wb")  # noqa: SIM115 - closed in finally
                    files.append(fh)
                    sink = Output(fh.write)
                if r.op in ("2>", "2>>"):
                    err = sink
                else:
                    out = sink
        except (FsError, ShellSyntaxError) as exc:
            for opened in files:
                opened.close()
            err.write(f"{SH}: {exc}\n")
            return 1
        try:
            return body(out, err, stdin)
        finally:
            for opened in files:
                opened.close()

    # -- expansion
    def _param(self, name: str) -> str:
        if name == "?":
            return str(self.status)
        if name == "$":
            return str(self.state.shell_pid)
        if name == "#":
            return "0"
        if name in ("0",):
            return SH
        if name.isdigit() or name in ("@", "*"):
            return ""
        return self.vars.get(name, "")

    def _expand_text(self, text: str) -> str:
        out = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):  # only left in double-quoted text
                out.append(text[i + 1])
                i += 2
                continue
            if c != "$" or i + 1 >= len(text):
                out.append(c)
                i += 1
                continue
            nxt = text[i + 1]
            if nxt == "(":
                raise ShellSyntaxError("command substitution ($(...)) is not supported by the virtual device")
            if nxt == "{":
                end = text.find("}", i + 2)
                if end < 0:
                    raise ShellSyntaxError("bad substitution")
                name = text[i + 2:end]
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|[?$#0-9]", name):
                    raise ShellSyntaxError(f"${{{name}}}: bad substitution")
                out.append(self._param(name))
                i = end + 1
                continue
            if nxt in "?$#@*" or nxt.isdigit():
                out.append(self._param(nxt))
                i += 2
                continue
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1:])
            if m:
                out.append(self._param(m.group(0)))
                i += 1 + len(m.group(0))
                continue
            out.append(c)
            i += 1
        return "".join(out)

    def _expand(self, word: Word, *, glob: bool) -> list[str]:
        pieces: list[tuple[str, bool]] = []  # (text, may_glob)
        for text, quote in word.parts:
            if quote == "'":
                pieces.append((text, False))
            else:
                pieces.append((self._expand_text(text), quote == ""))
        joined = "".join(t for t, _ in pieces)
        if not joined and all(q == "" for _, q in word.parts):
            return []  # an unquoted expansion to nothing is no word at all
        if glob and any(g and any(ch in t for ch in "*?[") for t, g in pieces):
            pattern = "".join(t if g else re.sub(r"([*?\[])", r"[\1]", t) for t, g in pieces)
            matches = self._glob(pattern)
            if matches:
                return matches
        return [joined]

    def _glob(self, pattern: str) -> list[str]:
        fs = self.state.fs
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        candidates = ["/" if absolute else ""]
        for part in parts:
            nxt = []
            for base in candidates:
                if any(ch in part for ch in "*?["):
                    try:
                        names = fs.listdir(base or ".", self.cwd)
                    except FsError:
                        continue
                    for name in names:
                        if name.startswith(".") and not part.startswith("."):
                            continue
                        if fnmatch.fnmatchcase(name, part):
                            nxt.append(posixpath.join(base, name) if base else name)
                else:
                    lit = re.sub(r"\[(.)\]", r"\1", part)
                    nxt.append(posixpath.join(base, lit) if base else lit)
            candidates = nxt
        return sorted(c for c in candidates if fs.exists(fs.resolve(c, self.cwd)))

    # -- dispatch
    def exec_argv(self, argv: list[str], ctx: Ctx) -> int:
        """Run one expanded command (a shell built-in, a registered built-in or a file); its exit status."""
        name = argv[0]
        if name in ("cd",):
            return self._cd(argv, ctx)
        if name == "exit":
            raise ExitShell(int(argv[1]) & 0xFF if len(argv) > 1 and argv[1].lstrip("-").isdigit() else self.status)
        if name == "export":
            for arg in argv[1:]:
                key, sep, value = arg.partition("=")
                if sep:
                    self.vars[key] = value
            return 0
        if name in ("sh", SH):
            return self._sh(argv, ctx)
        if "/" in name:
            return self._exec_path(name, argv, ctx)
        impl = COMMANDS.get(name)
        if impl is None:
            # Programs on PATH inside the sandbox (e.g. an executor_runner pushed there)
            for directory in ("/data/local/tmp",):
                node = self.state.fs.resolve(posixpath.join(directory, name))
                if node.host_path is not None and node.host_path.is_file() and directory in ctx.env.get("PATH", ""):
                    return self._exec_path(node.device_path, argv, ctx)
            ctx.err(f"{SH}: {name}: inaccessible or not found")
            return 127
        try:
            return impl(argv, ctx)
        except FsError as exc:
            ctx.err(f"{name}: {exc}")
            return 1
        except BrokenPipeError:
            return 141

    def _exec_path(self, path: str, argv: list[str], ctx: Ctx) -> int:
        node = self.state.fs.resolve(path, ctx.cwd)
        if node.host_path is None and node.content is not None and node.device_path == SH:
            return Shell.for_command(ctx).exec_argv(["sh", *argv[1:]], ctx)
        return exec_file(node, path, argv, ctx)

    def _cd(self, argv: list[str], ctx: Ctx) -> int:
        target = argv[1] if len(argv) > 1 else "/"
        fs = self.state.fs
        node = fs.resolve(target, self.cwd)
        if not fs.exists(node):
            ctx.err(f"{SH}: cd: {target}: No such file or directory")
            return 1
        if not node.is_dir:
            ctx.err(f"{SH}: cd: {target}: Not a directory")
            return 1
        self.cwd = node.device_path
        return 0

    def _sh(self, argv: list[str], ctx: Ctx) -> int:
        if len(argv) >= 3 and argv[1] == "-c":
            sub = Shell(self.state, self.cancel)
            sub.cwd, sub.vars = self.cwd, dict(ctx.env)
            return sub.run(argv[2], stdout=ctx.stdout.write, stderr=ctx.stderr.write, stdin=ctx.stdin)
        if len(argv) == 1:
            sub = Shell(self.state, self.cancel)
            sub.cwd, sub.vars = self.cwd, dict(ctx.env)
            script = ctx.stdin.read_all().decode("utf-8", "replace")
            return sub.run(script, stdout=ctx.stdout.write, stderr=ctx.stderr.write)
        ctx.err(f"{SH}: running script files is not supported by the virtual device")
        return 2
