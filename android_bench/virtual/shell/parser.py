"""The shell's parser: tokens become and-or lists of pipelines of commands.

Grammar (a POSIX subset): ``list := and_or ((';' | newline) and_or)*``, ``and_or := pipeline
(('&&' | '||') pipeline)*``, ``pipeline := ['!'] command ('|' command)*``, ``command := simple |
'(' list ')' redirect*``; a simple command is assignments, words and redirections
(``> >> < 2> 2>> 1> 2>&1 1>&2 >&2``). Background jobs (``&``) are a syntax error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from android_bench.virtual.shell.lexer import Op, ShellSyntaxError, Token, Word, tokenize

REDIRECT_OPS = (">", ">>", "<", "2>", "2>>", "1>", "2>&1", "1>&2", ">&2")
_FD_DUPS = ("2>&1", "1>&2", ">&2")


@dataclass
class Redirect:
    """One redirection; ``target`` is None for the descriptor duplications (``2>&1``...)."""

    op: str
    target: Word | None


@dataclass
class Simple:
    """``NAME=value ... word ... redirect ...``."""

    assigns: list[tuple[str, Word]]
    words: list[Word]
    redirects: list[Redirect]


@dataclass
class Group:
    """``( list ) redirect ...``: run in a sub-shell."""

    body: list[AndOr]
    redirects: list[Redirect]


CommandNode = Simple | Group


@dataclass
class Pipeline:
    negate: bool
    commands: list[CommandNode]


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _is_op(tok: Token | None, *values: str) -> bool:
    return isinstance(tok, Op) and tok.value in values


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> Token | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def parse_list(self, closing: str | None = None) -> list[AndOr]:
        items: list[AndOr] = []
        while True:
            tok = self.peek()
            while _is_op(tok, ";", "\n"):
                self.next()
                tok = self.peek()
            if tok is None or (closing and _is_op(tok, closing)):
                return items
            items.append(self.parse_and_or())
            tok = self.peek()
            if _is_op(tok, "&"):
                raise ShellSyntaxError("background jobs (&) are not supported by the virtual device")
            if tok is not None and not (isinstance(tok, Op) and tok.value in (";", "\n", closing)):
                raise ShellSyntaxError(f"syntax error near {tok.value if isinstance(tok, Op) else tok.raw!r}")

    def parse_and_or(self) -> AndOr:
        first = self.parse_pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while isinstance(op := self.peek(), Op) and op.value in ("&&", "||"):
            self.next()
            while _is_op(self.peek(), "\n"):
                self.next()
            rest.append((op.value, self.parse_pipeline()))
        return AndOr(first, rest)

    def parse_pipeline(self) -> Pipeline:
        negate = False
        tok = self.peek()
        if isinstance(tok, Word) and tok.parts == [("!", "")]:
            self.next()
            negate = True
        commands = [self.parse_command()]
        while _is_op(self.peek(), "|"):
            self.next()
            commands.append(self.parse_command())
        return Pipeline(negate, commands)

    def parse_redirect(self, op: str, redirects: list[Redirect]) -> None:
        if op in _FD_DUPS:
            redirects.append(Redirect(op, None))
            return
        target = self.next()
        if not isinstance(target, Word):
            raise ShellSyntaxError(f"syntax error: {op} needs a file name")
        redirects.append(Redirect(op, target))

    def parse_command(self) -> CommandNode:
        tok = self.peek()
        redirects: list[Redirect] = []
        if _is_op(tok, "("):
            self.next()
            body = self.parse_list(")")
            if not _is_op(self.peek(), ")"):
                raise ShellSyntaxError("syntax error: missing )")
            self.next()
            while isinstance(op := self.peek(), Op) and op.value in REDIRECT_OPS:
                self.next()
                self.parse_redirect(op.value, redirects)
            return Group(body, redirects)
        assigns: list[tuple[str, Word]] = []
        words: list[Word] = []
        while True:
            tok = self.peek()
            if tok is None:
                break
            if isinstance(tok, Op):
                if tok.value in REDIRECT_OPS:
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
