"""The root of emobench's exception tree.

Every error a user can cause (bad data, a bad checkpoint, an unreachable device) is an
``EmobenchError`` subclass whose message names the file, line, field or device and whose
``hint`` says what to do. The CLI prints those as one line plus the hint and exits 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EmobenchError(Exception):
    """A failure caused by input or environment, with a message a user can act on."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message
