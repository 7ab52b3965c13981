"""Built-in commands about the device: getprop/setprop, logcat, uname, id, date, which, dumpsys, ...

Each is a typed :class:`~android_bench.virtual.shell.registry.Command`. Answers come from the
device state (profile properties, the log buffer, the host's CPU count and kernel); the virtual
device says plainly where it differs from a phone (no battery, no other processes).
"""

from __future__ import annotations

import re
import time

from android_bench.virtual.shell.context import Ctx
from android_bench.virtual.shell.interpreter import Shell
from android_bench.virtual.shell.registry import COMMANDS, command, parse_flags


@command("getprop")
def _getprop(argv: list[str], ctx: Ctx) -> int:
    props = ctx.state.properties
    if len(argv) == 1:
        for key in sorted(props):
            ctx.stdout.write(f"[{key}]: [{props[key]}]\n")
        return 0
    value = props.get(argv[1], argv[2] if len(argv) > 2 else "")
    ctx.stdout.write(value + "\n")
    return 0


@command("setprop")
def _setprop(argv: list[str], ctx: Ctx) -> int:
    if len(argv) != 3:
        ctx.err("usage: setprop NAME VALUE")
        return 1
    if argv[1].startswith(("debug.", "log.tag.", "persist.debug.")):
        ctx.state.properties[argv[1]] = argv[2]
        return 0
    ctx.err(f"Failed to set property '{argv[1]}' to '{argv[2]}'.")
    return 1


@command("logcat")
def _logcat(argv: list[str], ctx: Ctx) -> int:
    return ctx.state.logcat.command(argv, ctx)


@command("taskset")
def _taskset(argv: list[str], ctx: Ctx) -> int:
    args = argv[1:]
    if args and args[0] == "-p":
        ctx.err("taskset: -p is not supported by the virtual device")
        return 1
    if len(args) < 2 or not re.fullmatch(r"(0x)?[0-9a-fA-F]+", args[0]):
        ctx.err("usage: taskset MASK COMMAND...")
        return 1
    # Built-in commands run in the server process and ignore the mask; a real executable started
    # from here (android_bench.virtual.native_exec) is pinned to it (issue 13).
    from dataclasses import replace

    from android_bench.virtual.native_exec import CPU_MASK_ENV

    pinned = replace(ctx, env={**ctx.env, CPU_MASK_ENV: args[0].removeprefix("0x")})
    return Shell.for_command(pinned).exec_argv(args[1:], pinned)


@command("uname")
def _uname(argv: list[str], ctx: Ctx) -> int:
    release = ctx.state.kernel_release
    flags, _ = parse_flags(argv, "asrmnvo")
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
def _id(argv: list[str], ctx: Ctx) -> int:
    ctx.stdout.write("uid=2000(shell) gid=2000(shell) groups=2000(shell) context=u:r:shell:s0\n")
    return 0


@command("whoami")
def _whoami(argv: list[str], ctx: Ctx) -> int:
    ctx.stdout.write("shell\n")
    return 0


@command("nproc")
def _nproc(argv: list[str], ctx: Ctx) -> int:
    ctx.stdout.write(f"{ctx.state.cpu_count}\n")
    return 0


@command("date")
def _date(argv: list[str], ctx: Ctx) -> int:
    if len(argv) > 1 and argv[1] == "+%s":
        ctx.stdout.write(f"{int(time.time())}\n")
    else:
        ctx.stdout.write(time.strftime("%a %b %d %H:%M:%S %Z %Y") + "\n")
    return 0


@command("which")
def _which(argv: list[str], ctx: Ctx) -> int:
    status = 0
    for name in argv[1:]:
        if name in COMMANDS or name in ("sh", "cd", "exit"):
            ctx.stdout.write(f"/system/bin/{name}\n")
        else:
            status = 1
    return status


@command("command")
def _command(argv: list[str], ctx: Ctx) -> int:
    if len(argv) >= 3 and argv[1] == "-v":
        return _which(["which", *argv[2:]], ctx)
    return Shell.for_command(ctx).exec_argv(argv[1:], ctx) if len(argv) > 1 else 0


@command("dumpsys")
def _dumpsys(argv: list[str], ctx: Ctx) -> int:
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
def _kill(argv: list[str], ctx: Ctx) -> int:
    ctx.err("kill: no such process")
    return 1


@command("sync")
def _sync(argv: list[str], ctx: Ctx) -> int:
    return 0
