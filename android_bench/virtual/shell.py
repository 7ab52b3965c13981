"""The virtual device's shell: a small POSIX-style interpreter with Python commands.

Nothing here runs a host process: a command line is tokenized (quotes, escapes, ``$VAR``/``$?``
expansion, globs in the sandbox), parsed (``;``, ``&&``, ``||``, ``|``, ``!``, ``( ... )``,
redirections ``> >> < 2> 2>&1``) and dispatched to Python implementations of the toybox commands
the harness and the adb client use. Command substitution (``$(...)``, backticks) is rejected with
an error instead of being run, so it can never execute anything.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import os
import posixpath
import re
import shutil
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from android_bench.virtual.fs import FsError

if TYPE_CHECKING:
    from android_bench.virtual.server import DeviceState

SH = "/system/bin/sh"


class ShellSyntaxError(Exception):
    """A command line the interpreter cannot parse (reported as exit status 2)."""


class ExitShell(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Cancelled(Exception):
    """The connection closed: stop the command."""


# ------------------------------------------------------------------------------------------ tokenizer
@dataclass
class Word:
    """A word as (text, quoting) parts; quoting is '' (unquoted), "'" or '"'."""

    parts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, text: str, quote: str) -> None:
        if self.parts and self.parts[-1][1] == quote:
            self.parts[-1] = (self.parts[-1][0] + text, quote)
        else:
            self.parts.append((text, quote))

    @property
    def raw(self) -> str:
        return "".join(t for t, _ in self.parts)


@dataclass(frozen=True)
class Op:
    value: str


_OPERATORS = ("&&", "||", ">>", "2>>", "2>&1", "1>&2", ">&2", "2>", "1>", ";", "|", "&", "(", ")", ">", "<", "\n")
_OPERATORS_LONGEST_FIRST = sorted(_OPERATORS, key=len, reverse=True)


def tokenize(line: str) -> list[Word | Op]:
    """Split a command line into words and operators, keeping track of quoting."""
    tokens: list[Word | Op] = []
    i, n = 0, len(line)
    word: Word | None = None

    def finish() -> None:
        nonlocal word
        if word is not None:
            tokens.append(word)
            word = None

    while i < n:
        c = line[i]
        if c in " \t":
            finish()
            i += 1
            continue
        if c == "#" and word is None:
            while i < n and line[i] != "\n":
                i += 1
            continue
        if word is None:
            op = next((o for o in _OPERATORS_LONGEST_FIRST if line.startswith(o, i)), "")
            if op:
                tokens.append(Op(op))
                i += len(op)
                continue
        elif c in ";|&()<>\n":
            finish()
            continue
        if word is None:
            word = Word()
        if c == "\\":
            if i + 1 < n:
                if line[i + 1] != "\n":
                    word.add(line[i + 1], "'")
                i += 2
            else:
                i += 1
            continue
        if c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated '")
            word.add(line[i + 1:end], "'")
            i = end + 1
            continue
        if c == '"':
            j = i + 1
            buf = []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n and line[j + 1] in '$`"\\\n':
                    if line[j + 1] != "\n":
                        buf.append("\\" + line[j + 1])
                    j += 2
                    continue
                if line[j] == "`":
                    raise ShellSyntaxError("command substitution (`...`) is not supported by the virtual device")
                buf.append(line[j])
                j += 1
            if j >= n:
                raise ShellSyntaxError('unterminated "')
            word.add("".join(buf), '"')
            if not word.parts or word.parts[-1][1] != '"':
                word.add("", '"')
            i = j + 1
            continue
        if c == "`":
            raise ShellSyntaxError("command substitution (`...`) is not supported by the virtual device")
        if c == "$" and line.startswith("$(", i):
            raise ShellSyntaxError("command substitution ($(...)) is not supported by the virtual device")
        word.add(c, "")
        i += 1
    finish()
    return tokens


# ------------------------------------------------------------------------------------------ parser
@dataclass
class Redirect:
    op: str
    target: Word | None


@dataclass
class Simple:
    assigns: list[tuple[str, Word]]
    words: list[Word]
    redirects: list[Redirect]


@dataclass
class Group:
    body: list
    redirects: list[Redirect]


@dataclass
class Pipeline:
    negate: bool
    commands: list


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class _Parser:
    def __init__(self, tokens: list[Word | Op]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Word | Op | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> Word | Op | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def parse_list(self, closing: str | None = None) -> list[AndOr]:
        items: list[AndOr] = []
        while True:
            tok = self.peek()
            while isinstance(tok, Op) and tok.value in (";", "\n"):
                self.next()
                tok = self.peek()
            if tok is None or (closing and isinstance(tok, Op) and tok.value == closing):
                return items
            items.append(self.parse_and_or())
            tok = self.peek()
            if isinstance(tok, Op) and tok.value == "&":
                raise ShellSyntaxError("background jobs (&) are not supported by the virtual device")
            if tok is not None and not (isinstance(tok, Op) and tok.value in (";", "\n", closing)):
                raise ShellSyntaxError(f"syntax error near {tok.value if isinstance(tok, Op) else tok.raw!r}")

    def parse_and_or(self) -> AndOr:
        first = self.parse_pipeline()
        rest = []
        while isinstance(self.peek(), Op) and self.peek().value in ("&&", "||"):
            op = self.next().value
            while isinstance(self.peek(), Op) and self.peek().value == "\n":
                self.next()
            rest.append((op, self.parse_pipeline()))
        return AndOr(first, rest)

    def parse_pipeline(self) -> Pipeline:
        negate = False
        tok = self.peek()
        if isinstance(tok, Word) and tok.parts == [("!", "")]:
            self.next()
            negate = True
        commands = [self.parse_command()]
        while isinstance(self.peek(), Op) and self.peek().value == "|":
            self.next()
            commands.append(self.parse_command())
        return Pipeline(negate, commands)

    def parse_redirect(self, op: str, redirects: list[Redirect]) -> None:
        if op in ("2>&1", "1>&2", ">&2"):
            redirects.append(Redirect(op, None))
            return
        target = self.next()
        if not isinstance(target, Word):
            raise ShellSyntaxError(f"syntax error: {op} needs a file name")
        redirects.append(Redirect(op, target))

    def parse_command(self):
        tok = self.peek()
        redirects: list[Redirect] = []
        if isinstance(tok, Op) and tok.value == "(":
            self.next()
            body = self.parse_list(")")
            if not (isinstance(self.peek(), Op) and self.peek().value == ")"):
                raise ShellSyntaxError("syntax error: missing )")
            self.next()
            while isinstance(self.peek(), Op) and self.peek().value in (">", ">>", "<", "2>", "2>>", "1>",
                                                                         "2>&1", "1>&2", ">&2"):
                self.parse_redirect(self.next().value, redirects)
            return Group(body, redirects)
        assigns: list[tuple[str, Word]] = []
        words: list[Word] = []
        while True:
            tok = self.peek()
            if tok is None:
                break
            if isinstance(tok, Op):
                if tok.value in (">", ">>", "<", "2>", "2>>", "1>", "2>&1", "1>&2", ">&2"):
                    self.next()
                    self.parse_redirect(tok.value, redirects)
                    continue
                break
            self.next()
            first = tok.parts[0] if tok.parts else ("", "")
            if not words and first[1] == "" and _ASSIGN_RE.match(first[0]):
                name, _, value = first[0].partition("=")
                assigns.append((name, Word([(value, "")] + tok.parts[1:])))
                continue
            words.append(tok)
        if not words and not assigns and not redirects:
            tok = self.peek()
            raise ShellSyntaxError(f"syntax error near {tok.value if isinstance(tok, Op) else 'end of line'!r}")
        return Simple(assigns, words, redirects)


def parse(line: str) -> list[AndOr]:
    """Parse a command line into and-or lists."""
    return _Parser(tokenize(line)).parse_list()


# ------------------------------------------------------------------------------------------ I/O
class Output:
    """Where a command writes: a callable sink plus a byte count."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if data:
            self.sink(data)


class Stdin:
    """Standard input: a fixed byte string, or a blocking source fed by the adb stream."""

    def __init__(self, data: bytes | None = None, reader: Callable[[], bytes] | None = None) -> None:
        self._data = data
        self._reader = reader

    def read_all(self) -> bytes:
        if self._data is not None:
            return self._data
        if self._reader is None:
            return b""
        self._data = self._reader()
        return self._data


@dataclass
class Ctx:
    """One command's environment."""

    state: DeviceState
    cwd: str
    env: dict[str, str]
    stdin: Stdin
    stdout: Output
    stderr: Output
    cancel: threading.Event

    def err(self, message: str) -> None:
        self.stderr.write(message.rstrip("\n") + "\n")


Command = Callable[[list[str], Ctx], int]


# ------------------------------------------------------------------------------------------ interpreter
class Shell:
    """Runs command lines against one device state. One instance per adb shell session."""

    def __init__(self, state: DeviceState, cancel: threading.Event | None = None) -> None:
        self.state = state
        self.cwd = "/"
        self.vars: dict[str, str] = {"PATH": "/system/bin:/data/local/tmp", "HOME": "/", "SHELL": SH,
                                     "TMPDIR": "/data/local/tmp", "USER": "shell"}
        self.status = 0
        self.cancel = cancel or threading.Event()

    def run(self, line: str, *, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None],
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

    def _command(self, node, stdin: Stdin, out: Output, err: Output) -> int:
        if self.cancel.is_set():
            raise Cancelled()
        if isinstance(node, Group):
            sub = Shell(self.state, self.cancel)
            sub.cwd, sub.vars, sub.status = self.cwd, dict(self.vars), self.status
            def body(o: Output, e: Output, s: Stdin) -> int:
                try:
                    status = 0
                    for item in node.body:
                        status = sub._and_or(item, s, o, e)
                    return status
                except ExitShell as ex:
                    return ex.status
            return self._with_redirects(node.redirects, stdin, out, err, body)
        try:
            argv = []
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
                        body: Callable[[Output, Output, Stdin], int]) -> int:
        files: list[tuple[object, bytearray, bool]] = []
        fs = self.state.fs
        try:
            for r in redirects:
                if r.op == "2>&1":
                    err = out
                    continue
                if r.op in ("1>&2", ">&2"):
                    out = err
                    continue
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
                    files.append((fh, bytearray(), append))
                    sink = Output(fh.write)
                if r.op in ("2>", "2>>"):
                    err = sink
                else:
                    out = sink
        except (FsError, ShellSyntaxError) as exc:
            for fh, _, _ in files:
                fh.close()
            err.write(f"{SH}: {exc}\n")
            return 1
        try:
            return body(out, err, stdin)
        finally:
            for fh, _, _ in files:
                fh.close()

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
            return self.state.exec_file(name, argv, ctx)
        impl = COMMANDS.get(name)
        if impl is None:
            # Programs on PATH inside the sandbox (e.g. an executor_runner pushed there)
            for directory in ("/data/local/tmp",):
                node = self.state.fs.resolve(posixpath.join(directory, name))
                if node.host_path is not None and node.host_path.is_file() and directory in ctx.env.get("PATH", ""):
                    return self.state.exec_file(node.device_path, argv, ctx)
            ctx.err(f"{SH}: {name}: inaccessible or not found")
            return 127
        try:
            return impl(argv, ctx)
        except FsError as exc:
            ctx.err(f"{name}: {exc}")
            return 1
        except BrokenPipeError:
            return 141

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


# ------------------------------------------------------------------------------------------ commands
COMMANDS: dict[str, Command] = {}


def command(*names: str):
    def register(fn: Command) -> Command:
        for name in names:
            COMMANDS[name] = fn
        return fn
    return register


def _flags(argv: list[str], allowed: str) -> tuple[set[str], list[str]]:
    flags: set[str] = set()
    rest: list[str] = []
    it = iter(argv[1:])
    for arg in it:
        if arg == "--":
            rest.extend(it)
            break
        if arg.startswith("-") and len(arg) > 1 and all(ch in allowed for ch in arg[1:]):
            flags.update(arg[1:])
        else:
            rest.append(arg)
    return flags, rest


@command("true")
def _true(argv, ctx):
    return 0


@command("false")
def _false(argv, ctx):
    return 1


@command("echo")
def _echo(argv, ctx):
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
def _printf(argv, ctx):
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

        def sub(m, it=it):
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


@command("cat")
def _cat(argv, ctx):
    _, files = _flags(argv, "uv")
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
def _ls(argv, ctx):
    flags, paths = _flags(argv, "laAd1hRFs")
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
def _rm(argv, ctx):
    flags, paths = _flags(argv, "rRfv")
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
def _rmdir(argv, ctx):
    _, paths = _flags(argv, "p")
    status = 0
    for path in paths:
        try:
            ctx.state.fs.writable_host_path(path, ctx.cwd).rmdir()
        except (FsError, OSError) as exc:
            ctx.err(f"rmdir: {path}: {exc.strerror}")
            status = 1
    return status


@command("mkdir")
def _mkdir(argv, ctx):
    flags, paths = _flags(argv, "pv")
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
def _touch(argv, ctx):
    _, paths = _flags(argv, "ac")
    status = 0
    for path in paths:
        try:
            ctx.state.fs.writable_host_path(path, ctx.cwd).touch()
        except (FsError, OSError) as exc:
            ctx.err(f"touch: {path}: {exc.strerror}")
            status = 1
    return status


@command("chmod")
def _chmod(argv, ctx):
    flags, args = _flags(argv, "Rfv")
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
def _mv_cp(argv, ctx):
    flags, args = _flags(argv, "fnrRpa")
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


def _digest(name: str):
    def run(argv, ctx):
        _, paths = _flags(argv, "bc")
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


COMMANDS["sha256sum"] = _digest("sha256")
COMMANDS["md5sum"] = _digest("md5")
COMMANDS["sha1sum"] = _digest("sha1")


@command("df")
def _df(argv, ctx):
    flags, paths = _flags(argv, "khP")
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


@command("getprop")
def _getprop(argv, ctx):
    props = ctx.state.properties
    if len(argv) == 1:
        for key in sorted(props):
            ctx.stdout.write(f"[{key}]: [{props[key]}]\n")
        return 0
    value = props.get(argv[1], argv[2] if len(argv) > 2 else "")
    ctx.stdout.write(value + "\n")
    return 0


@command("setprop")
def _setprop(argv, ctx):
    if len(argv) != 3:
        ctx.err("usage: setprop NAME VALUE")
        return 1
    if argv[1].startswith(("debug.", "log.tag.", "persist.debug.")):
        ctx.state.properties[argv[1]] = argv[2]
        return 0
    ctx.err(f"Failed to set property '{argv[1]}' to '{argv[2]}'.")
    return 1


@command("logcat")
def _logcat(argv, ctx):
    return ctx.state.logcat.command(argv, ctx)


@command("taskset")
def _taskset(argv, ctx):
    args = argv[1:]
    if args and args[0] == "-p":
        ctx.err("taskset: -p is not supported by the virtual device")
        return 1
    if len(args) < 2 or not re.fullmatch(r"(0x)?[0-9a-fA-F]+", args[0]):
        ctx.err("usage: taskset MASK COMMAND...")
        return 1
    # The mask is accepted as on a phone; the virtual device's commands run in the server process.
    shell = Shell(ctx.state, ctx.cancel)
    shell.cwd, shell.vars = ctx.cwd, dict(ctx.env)
    return shell.exec_argv(args[1:], ctx)


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
def _test(argv, ctx):
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
def _pwd(argv, ctx):
    ctx.stdout.write(ctx.cwd + "\n")
    return 0


@command("sleep")
def _sleep(argv, ctx):
    try:
        seconds = float(argv[1])
    except (IndexError, ValueError):
        ctx.err("sleep: need a number")
        return 1
    if ctx.cancel.wait(seconds):
        raise Cancelled()
    return 0


@command("head", "tail")
def _head_tail(argv, ctx):
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
def _wc(argv, ctx):
    flags, files = _flags(argv, "clw")
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
def _grep(argv, ctx):
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


@command("uname")
def _uname(argv, ctx):
    release = ctx.state.kernel_release
    flags, _ = _flags(argv, "asrmnvo")
    if "a" in flags:
        ctx.stdout.write(f"Linux localhost {release} #1 SMP PREEMPT {ctx.state.machine} Toybox\n")
    elif "r" in flags:
        ctx.stdout.write(release + "\n")
    elif "m" in flags:
        ctx.stdout.write(ctx.state.machine + "\n")
    else:
        ctx.stdout.write("Linux\n")
    return 0


@command("id")
def _id(argv, ctx):
    ctx.stdout.write("uid=2000(shell) gid=2000(shell) groups=2000(shell) context=u:r:shell:s0\n")
    return 0


@command("whoami")
def _whoami(argv, ctx):
    ctx.stdout.write("shell\n")
    return 0


@command("nproc")
def _nproc(argv, ctx):
    ctx.stdout.write(f"{ctx.state.cpu_count}\n")
    return 0


@command("date")
def _date(argv, ctx):
    if len(argv) > 1 and argv[1] == "+%s":
        ctx.stdout.write(f"{int(time.time())}\n")
    else:
        ctx.stdout.write(time.strftime("%a %b %d %H:%M:%S %Z %Y") + "\n")
    return 0


@command("stat")
def _stat(argv, ctx):
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


@command("which")
def _which(argv, ctx):
    status = 0
    for name in argv[1:]:
        if name in COMMANDS or name in ("sh", "cd", "exit"):
            ctx.stdout.write(f"/system/bin/{name}\n")
        else:
            status = 1
    return status


@command("command")
def _command(argv, ctx):
    if len(argv) >= 3 and argv[1] == "-v":
        return _which(["which", *argv[2:]], ctx)
    shell = Shell(ctx.state, ctx.cancel)
    shell.cwd, shell.vars = ctx.cwd, dict(ctx.env)
    return shell.exec_argv(argv[1:], ctx) if len(argv) > 1 else 0


@command("dumpsys")
def _dumpsys(argv, ctx):
    if len(argv) >= 2 and argv[1] == "battery":
        b = ctx.state.profile.battery
        ctx.stdout.write(
            "Current Battery Service state:\n  (virtual device: profile values, there is no battery)\n"
            "  AC powered: true\n  USB powered: false\n  present: false\n"
            f"  level: {int(b.get('level', 100))}\n  scale: 100\n"
            f"  temperature: {int(b.get('temperature_tenths_c', 250))}\n"
            f"  status: {b.get('status', 'Not charging')}\n")
        return 0
    ctx.err(f"dumpsys: service {argv[1] if len(argv) > 1 else ''} is not available on the virtual device")
    return 1


@command("kill")
def _kill(argv, ctx):
    ctx.err("kill: no such process")
    return 1


@command("sync")
def _sync(argv, ctx):
    return 0


def text_io(data: bytes) -> io.StringIO:
    return io.StringIO(data.decode("utf-8", "replace"))
