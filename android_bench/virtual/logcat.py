"""The virtual device's log buffer and its ``logcat`` command.

Supports what a log parser meets: ``-c`` (clear), ``-d`` (dump and exit), ``-s TAG`` and filter
specs ``TAG:PRIO`` / ``*:S``, ``-v brief|threadtime|time|tag|process|raw``, ``-t N`` (last N).
Without ``-d`` it prints the buffer and then follows new entries until the connection closes.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Protocol

PRIORITIES = "VDIWEFS"


class _Writer(Protocol):
    def write(self, data: bytes | str) -> None: ...


class CommandContext(Protocol):
    """What the ``logcat`` command needs of a shell command's context (the shell's ``Ctx`` has it)."""

    @property
    def stdout(self) -> _Writer: ...

    @property
    def cancel(self) -> threading.Event: ...

    def err(self, message: str) -> None: ...


@dataclass(frozen=True)
class LogEntry:
    time_s: float
    pid: int
    tid: int
    priority: str  # one of V D I W E F
    tag: str
    message: str


def format_entry(entry: LogEntry, fmt: str) -> str:
    """One entry in a logcat ``-v`` format (multi-line messages repeat the prefix, as logcat does)."""
    lines = entry.message.split("\n") or [""]
    out = []
    for line in lines:
        if fmt == "brief":
            out.append(f"{entry.priority}/{entry.tag}({entry.pid:5d}): {line}")
        elif fmt == "tag":
            out.append(f"{entry.priority}/{entry.tag}: {line}")
        elif fmt == "process":
            out.append(f"{entry.priority}({entry.pid:5d}) {line}  ({entry.tag})")
        elif fmt == "raw":
            out.append(line)
        else:
            stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(entry.time_s))
            millis = int((entry.time_s % 1) * 1000)
            if fmt == "time":
                out.append(f"{stamp}.{millis:03d} {entry.priority}/{entry.tag}({entry.pid:5d}): {line}")
            else:  # threadtime, the default
                out.append(f"{stamp}.{millis:03d} {entry.pid:5d} {entry.tid:5d} {entry.priority} "
                           f"{entry.tag:<8}: {line}")
    return "\n".join(out) + "\n"


class LogBuffer:
    """An in-memory ring of log entries shared by every session of one virtual device."""

    def __init__(self, max_entries: int = 20000) -> None:
        self._entries: list[LogEntry] = []
        self._max = max_entries
        self._cond = threading.Condition()
        self._serial = 0

    def log(self, priority: str, tag: str, message: str, *, pid: int | None = None, tid: int | None = None) -> None:
        entry = LogEntry(time.time(), pid if pid is not None else os.getpid(),
                         tid if tid is not None else threading.get_native_id(), priority, tag, message)
        with self._cond:
            self._entries.append(entry)
            self._serial += 1
            if len(self._entries) > self._max:
                del self._entries[: len(self._entries) - self._max]
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._entries.clear()

    def entries(self) -> list[LogEntry]:
        with self._cond:
            return list(self._entries)

    # -- the command
    def command(self, argv: list[str], ctx: CommandContext) -> int:
        """Run ``logcat argv[1:]`` (see the module docstring); its exit status."""
        args = argv[1:]
        dump, fmt, tail = False, "threadtime", None
        specs: list[tuple[str, str]] = []
        silence_rest = False
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-c":
                self.clear()
                return 0
            if a == "-d":
                dump = True
            elif a == "-s":
                silence_rest = True
                if i + 1 < len(args) and not args[i + 1].startswith("-"):
                    tag, _, prio = args[i + 1].partition(":")
                    specs.append((tag, prio or "V"))
                    i += 1
            elif a == "-v" and i + 1 < len(args):
                fmt = args[i + 1]
                if fmt not in ("brief", "threadtime", "time", "tag", "process", "raw"):
                    ctx.err(f"logcat: unknown format '{fmt}'")
                    return 1
                i += 1
            elif a in ("-t", "-T") and i + 1 < len(args):
                tail = int(args[i + 1]) if args[i + 1].isdigit() else None
                i += 1
                dump = dump or a == "-t"
            elif a in ("-b",) and i + 1 < len(args):
                i += 1  # one buffer only: main
            elif ":" in a and not a.startswith("-"):
                tag, _, prio = a.partition(":")
                specs.append((tag, prio or "V"))
            else:
                ctx.err(f"logcat: unknown option '{a}'")
                return 1
            i += 1
        default_prio = "S" if silence_rest else "V"
        for tag, prio in specs:
            if tag == "*":
                default_prio = prio
        tag_prio = {tag: prio for tag, prio in specs if tag != "*"}

        def wanted(e: LogEntry) -> bool:
            threshold = tag_prio.get(e.tag, default_prio)
            return PRIORITIES.index(e.priority) >= PRIORITIES.index(threshold) and threshold != "S"

        entries = [e for e in self.entries() if wanted(e)]
        if tail is not None:
            entries = entries[-tail:] if tail else []
        for e in entries:
            ctx.stdout.write(format_entry(e, fmt))
        if dump:
            return 0
        seen = self._serial
        while not ctx.cancel.is_set():
            with self._cond:
                self._cond.wait(0.2)
                new = self._serial - seen
                fresh = self._entries[-new:] if new > 0 else []
                seen = self._serial
            for e in fresh:
                if wanted(e):
                    ctx.stdout.write(format_entry(e, fmt))
        return 130
