"""Exceptions of the export package; each names the file, folder or setting at fault."""

from __future__ import annotations

from emobench_common.errors import EmobenchError


class ExportError(EmobenchError):
    """Base class for export problems a user can act on."""


class ExportConfigError(ExportError):
    """An export setting that is invalid or inconsistent (e.g. static INT8 without calibration data)."""


class OutputFolderError(ExportError):
    """The output folder already holds a different export (and ``overwrite`` was not given)."""


class VerificationDataError(ExportError):
    """No real images to verify or calibrate with."""


class ParityError(ExportError):
    """An FP32 artifact whose outputs differ from the eager model beyond the tolerance."""


class ExportFailedError(ExportError):
    """One or more artifacts failed; the manifest records which and why."""


class ManifestError(ExportError):
    """A manifest that is invalid, unsafe (a path escaping its folder) or does not match its files."""


class RuntimeUnavailableError(ExportError):
    """An artifact cannot run on the requested device/runtime here."""
