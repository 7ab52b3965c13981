"""The shell's lexer: a command line becomes words (with their quoting) and operators.

Quotes and backslashes are resolved here but ``$VAR`` expansion is not: a ``Word`` keeps each part
with its quoting so the interpreter can expand and glob only what was unquoted. Command
substitution (``$(...)``, backticks) is rejected with ``ShellSyntaxError``, never run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ShellSyntaxError(Exception):
    """A command line the interpreter cannot parse (reported as exit status 2)."""


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
    """An operator token (``;``, ``&&``, ``|``, ``>``, ``2>&1``, a newline, ...)."""

    value: str


Token = Word | Op

OPERATORS = ("&&", "||", ">>", "2>>", "2>&1", "1>&2", ">&2", "2>", "1>", ";", "|", "&", "(", ")", ">", "<", "\n")
_OPERATORS_LONGEST_FIRST = sorted(OPERATORS, key=len, reverse=True)
_NO_SUBSTITUTION = "command substitution ({}) is not supported by the virtual device"


def tokenize(line: str) -> list[Token]:
    """Split a command line into words and operators, keeping track of quoting."""
    tokens: list[Token] = []
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
                    raise ShellSyntaxError(_NO_SUBSTITUTION.format("`...`"))
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
            raise ShellSyntaxError(_NO_SUBSTITUTION.format("`...`"))
        if c == "$" and line.startswith("$(", i):
            raise ShellSyntaxError(_NO_SUBSTITUTION.format("$(...)"))
        word.add(c, "")
        i += 1
    finish()
    return tokens
