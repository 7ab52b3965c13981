"""The built-in commands, one module per kind; importing this package registers them all.

:mod:`.text` (echo, printf, test, head/tail, wc, grep, ...), :mod:`.files` (cat, ls, rm, mkdir,
chmod, cp/mv, checksums, df, stat, ...) and :mod:`.system` (getprop/setprop, logcat, taskset,
uname, id, date, which, command, dumpsys, ...).
"""

from android_bench.virtual.shell.commands import files, system, text

__all__ = ["files", "system", "text"]
