"""``manifest.json``: what an export folder holds, validated against ``manifest.schema.json``.

Everything downstream (the ablation, a phone app) reads the manifest and never guesses. ``load_manifest``
refuses a manifest whose artifact paths would leave its folder (absolute, ``..``, or a symlink that
resolves outside) and, with ``verify_files=True``, checks every file's size and sha256.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from emobench_common.fileio import atomic_write_json, sha256_file
from emobench_common.input_spec import InputSpec, InputSpecError
from export.artifact import Artifact, Parity, QuantReport
from export.errors import ManifestError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "emobench-export-manifest"
MANIFEST_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


@dataclass(frozen=True)
class Failure:
    """An artifact that could not be exported or verified, and the exporter's reason."""

    format: str
    precision: str
    mode: str | None
    error: str


@dataclass(frozen=True)
class Skipped:
    """A format x precision x mode the format does not offer (e.g. static INT8 TorchScript)."""

    format: str
    precision: str
    mode: str | None
    reason: str


@dataclass(frozen=True)
class Manifest:
    """A loaded (or freshly written) export manifest; artifact paths are absolute.

    ``input_spec`` is the input contract the checkpoint made; the file holds it as the ``input``
    object (with the batch size of the artifacts' input, ``input_batch_size``) and ``class_names``.
    """

    folder: Path
    created_at: str
    versions: Mapping[str, str]
    checkpoint: Mapping[str, Any]
    arch: str
    input_spec: InputSpec
    input_batch_size: int
    output: Mapping[str, Any]
    config: Mapping[str, Any]
    verification_data: Mapping[str, Any]
    calibration_data: Mapping[str, Any] | None
    artifacts: tuple[Artifact, ...]
    failures: tuple[Failure, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.input_spec.class_names

    @property
    def input(self) -> dict[str, Any]:
        """The manifest's ``input`` object."""
        return self.input_spec.to_manifest_input(self.input_batch_size)

    def find(self, fmt: str, precision: str, mode: str | None = None) -> Artifact | None:
        """The artifact with that format, precision and mode, or None."""
        return next((a for a in self.artifacts if a.key == (fmt, precision, mode)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "created_at": self.created_at,
            "versions": dict(self.versions),
            "checkpoint": dict(self.checkpoint),
            "arch": self.arch,
            "class_names": list(self.class_names),
            "input": self.input,
            "output": dict(self.output),
            "config": dict(self.config),
            "verification_data": dict(self.verification_data),
            "calibration_data": dict(self.calibration_data) if self.calibration_data else None,
            "artifacts": [a.to_dict(relative_to=self.folder) for a in self.artifacts],
            "failures": [f.__dict__ for f in self.failures],
            "skipped": [s.__dict__ for s in self.skipped],
        }


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON schema every manifest must satisfy."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest_dict(obj: Any, *, source: str = "manifest") -> None:
    """Raise ``ManifestError`` naming the field when ``obj`` does not satisfy the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise ManifestError(f"{source}: field {where}: {first.message}"
                            + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""))


def write_manifest(manifest: Manifest) -> Path:
    """Validate and write ``manifest.json`` atomically into the manifest's folder."""
    data = manifest.to_dict()
    validate_manifest_dict(data, source=str(manifest.path))
    return atomic_write_json(manifest.path, data)


def safe_artifact_path(folder: Path, relative: str, *, source: str) -> Path:
    """``folder / relative``, refusing anything that would leave ``folder``.

    Raises:
        ManifestError: an absolute path, a ``..`` component, a backslash, or a symlink resolving outside.
    """
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or "\\" in relative or "\0" in relative or any(p == ".." for p in pure.parts) \
            or os.path.isabs(relative) or not pure.parts or pure.parts == (".",):
        raise ManifestError(f"{source}: artifact path {relative!r} escapes the manifest's folder; refused")
    candidate = folder / Path(*pure.parts)
    root = folder.resolve()
    resolved = candidate.resolve()
    if root not in resolved.parents:  # the folder itself is not an artifact either
        raise ManifestError(f"{source}: artifact path {relative!r} resolves to {resolved}, outside {root}; refused",
                            hint="a symlink in the export folder points elsewhere; re-export instead")
    return candidate


def load_manifest(path: str | os.PathLike[str], *, verify_files: bool = False) -> Manifest:
    """Read and validate a manifest (a ``manifest.json`` path or its folder).

    Args:
        path: the manifest file or the export folder holding it.
        verify_files: also check that every artifact exists with the recorded size and sha256.

    Raises:
        ManifestError: missing/unparsable file, schema violation, an unsafe path, or (with
            ``verify_files``) a missing or changed artifact.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist", hint="run `emobench export CHECKPOINT --out DIR` first")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{path} is not readable JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
    validate_manifest_dict(obj, source=str(path))
    folder = path.parent
    artifacts = []
    for i, a in enumerate(obj["artifacts"]):
        where = f"{path} artifacts[{i}]"
        artifact_path = safe_artifact_path(folder, a["path"], source=where)
        if verify_files:
            _verify_file(artifact_path, a, where)
        artifacts.append(Artifact(
            format=a["format"], precision=a["precision"], mode=a["mode"], path=artifact_path,
            size_bytes=a["size_bytes"], sha256=a["sha256"], batch_size=a["batch_size"], runtime=a["runtime"],
            export_seconds=a["export_seconds"], parity=Parity.from_dict(a["parity"]),
            quantization=QuantReport.from_dict(a["quantization"]) if a["quantization"] else None,
            details=a["details"],
        ))
    keys = [a.key for a in artifacts]
    if len(set(keys)) != len(keys):
        raise ManifestError(f"{path}: an artifact (format, precision, mode) is listed twice")
    try:
        spec = InputSpec.from_manifest_input(obj["input"], obj["class_names"], source=str(path))
    except InputSpecError as exc:
        raise ManifestError(exc.message, hint="re-export from the checkpoint") from exc
    return Manifest(
        folder=folder, created_at=obj["created_at"], versions=obj["versions"], checkpoint=obj["checkpoint"],
        arch=obj["arch"], input_spec=spec, input_batch_size=int(obj["input"]["shape"][0]), output=obj["output"],
        config=obj["config"], verification_data=obj["verification_data"], calibration_data=obj["calibration_data"],
        artifacts=tuple(artifacts),
        failures=tuple(Failure(**f) for f in obj["failures"]),
        skipped=tuple(Skipped(**s) for s in obj["skipped"]),
        raw=obj,
    )


def _verify_file(artifact_path: Path, entry: Mapping[str, Any], where: str) -> None:
    if not artifact_path.is_file():
        raise ManifestError(f"{where}: {artifact_path} is missing")
    size = artifact_path.stat().st_size
    if size != entry["size_bytes"]:
        raise ManifestError(f"{where}: {artifact_path.name} is {size} bytes, the manifest says {entry['size_bytes']}")
    digest = sha256_file(artifact_path)
    if digest != entry["sha256"]:
        raise ManifestError(f"{where}: {artifact_path.name} sha256 {digest[:12]}... does not match the manifest",
                            hint="the file changed after export; re-export it")
