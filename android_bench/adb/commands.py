"""Device shell command lines and what they give back, for every transport.

``quote_command`` builds a command line (each argument quoted with :func:`shlex.quote`);
``ShellResult`` is stdout, stderr and the exit status. Shell v2 separates the streams and reports
the status (:func:`parse_shell_v2`); the legacy shell merges them and has no status, so the command
is wrapped to print it behind a random marker (:func:`wrap_legacy`, :func:`unwrap_legacy`).
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from android_bench import shell_v2
from android_bench.adb.errors import DeviceCommandError


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class ShellResult:
    """What one device shell command produced. ``stderr`` is '' where the transport merges it."""

    stdout: str
    stderr: str
    exit_status: int

    def check(self, cmd: str | Sequence[str], *, device: str = "") -> ShellResult:
        """Return self, or raise :class:`DeviceCommandError` with the output when the status is non-zero."""
        if self.exit_status == 0:
            return self
        shown = cmd if isinstance(cmd, str) else quote_command(cmd)
        where = f" on {device}" if device else ""
        output = "\n".join(p for p in (_tail(self.stdout), _tail(self.stderr)) if p)
        raise DeviceCommandError(
            f"device command{where} exited with status {self.exit_status}: {shown}"
            + (f"\n{output}" if output else " (no output)"),
            result=self,
        )


def quote_command(args: Sequence[str] | str) -> str:
    """A device shell command line: each argument of a sequence quoted with :func:`shlex.quote`."""
    if isinstance(args, str):
        return args
    if not args:
        raise ValueError("empty device command")
    return " ".join(shlex.quote(str(a)) for a in args)




def parse_shell_v2(chunks: Iterable[bytes]) -> tuple[bytes, bytes, int | None]:
    """Split a shell-v2 byte stream into stdout, stderr and the exit status (None if missing)."""
    buf = bytearray()
    out, err = bytearray(), bytearray()
    status: int | None = None
    for chunk in chunks:
        buf += chunk
        for kind, payload in shell_v2.take_packets(buf):
            if kind == shell_v2.STDOUT:
                out += payload
            elif kind == shell_v2.STDERR:
                err += payload
            elif kind == shell_v2.EXIT and payload:
                status = payload[0]
    return bytes(out), bytes(err), status




def wrap_legacy(cmd: str) -> tuple[str, str]:
    """Wrap ``cmd`` so its exit status follows the output behind a random per-call marker."""
    nonce = secrets.token_hex(12)
    return f"({cmd}\n); printf '\\n%s:%d\\n' {nonce} $?", nonce


def unwrap_legacy(data: bytes, nonce: str) -> tuple[bytes, int | None]:
    """Strip the marker; the output before it keeps exactly its own trailing newline (or none)."""
    marker = b"\n" + nonce.encode() + b":"
    idx = data.rfind(marker)
    if idx < 0:
        return data, None
    rest = data[idx + len(marker):].strip()
    if not rest.isdigit():
        return data, None
    return data[:idx], int(rest)




def decode_output(data: bytes) -> str:
    """A command's output as text (invalid UTF-8 replaced, never an error)."""
    return data.decode("utf-8", "replace")
