"""The virtual device's shell: a small POSIX-style interpreter with Python commands.

Nothing here runs a host process: a command line is tokenized (:mod:`.lexer`: quotes, escapes),
parsed (:mod:`.parser`: ``;``, ``&&``, ``||``, ``|``, ``!``, ``( ... )``, redirections
``> >> < 2> 2>&1``), and run by :mod:`.interpreter` (``$VAR``/``$?`` expansion, globs in the
sandbox) against the device state. Built-in commands are typed functions in :mod:`.commands`,
registered by name in :mod:`.registry`; files named by path run through :mod:`.programs` (the
built-in ``executor_runner``). :mod:`.context` holds what every command gets (``Ctx``). Command
substitution (``$(...)``, backticks) is rejected with an error instead of being run, so it can
never execute anything.
"""

from android_bench.virtual.shell import commands  # importing it registers the built-ins
from android_bench.virtual.shell.context import SH, Cancelled, Ctx, ExitShell, Output, Stdin
from android_bench.virtual.shell.interpreter import Shell
from android_bench.virtual.shell.lexer import ShellSyntaxError, tokenize
from android_bench.virtual.shell.parser import parse
from android_bench.virtual.shell.registry import COMMANDS, Command, command

__all__ = ["COMMANDS", "SH", "Cancelled", "Command", "Ctx", "commands", "ExitShell", "Output", "Shell", "ShellSyntaxError",
           "Stdin", "command", "parse", "tokenize"]
