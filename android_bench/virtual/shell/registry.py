"""The table of built-in commands: name -> a typed ``Command``, filled by the ``@command`` decorator.

The command modules (:mod:`.text`, :mod:`.files`, :mod:`.system`) register themselves on import;
the interpreter looks names up in ``COMMANDS``. ``parse_flags`` is the toybox-style option parser
they share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from android_bench.virtual.shell.context import Ctx


class Command(Protocol):
    """A built-in: ``argv`` (``argv[0]`` is the name it was called by) and its context in, exit status out."""

    def __call__(self, argv: list[str], ctx: Ctx, /) -> int: ...


COMMANDS: dict[str, Command] = {}
"""Every built-in by name (several names may share one implementation, e.g. ``test`` and ``[``)."""

def command(*names: str) -> Callable[[Command], Command]:
    """Register the decorated function as the built-in ``names``."""

    def register(fn: Command) -> Command:
        for name in names:
            COMMANDS[name] = fn
        return fn

    return register


def parse_flags(argv: list[str], allowed: str) -> tuple[set[str], list[str]]:
    """Single-letter flags (``-la`` = ``l`` + ``a``, only letters in ``allowed``) and the other arguments.

    ``--`` ends the flags; a word with a letter outside ``allowed`` is an argument.
    """
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
