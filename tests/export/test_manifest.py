"""The manifest schema, and load_manifest's refusal of unsafe or changed files."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from export.errors import ManifestError
from export.manifest import SCHEMA_PATH, load_manifest, load_schema

# the session's full_export (~45 s) is built once per xdist worker: keep its users on one
pytestmark = pytest.mark.xdist_group("full_export")


def test_written_manifest_validates_against_the_schema_in_the_repo(full_export):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(full_export.path.read_text()), schema)


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m.pop("class_names"), "class_names"),
    (lambda m: m["artifacts"][0].update(sha256="xyz"), "sha256"),
    (lambda m: m["artifacts"][0].update(precision="int4"), "precision"),
    (lambda m: m["artifacts"][0].update(quantization=None, precision="int8", mode="dynamic"), "quantization"),
])
def test_schema_rejects_broken_manifests(full_export, mutate, field):
    raw = json.loads(full_export.path.read_text())
    mutate(raw)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, load_schema())


def _copy_export(full_export, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(full_export.folder, dst)
    return dst


def _rewrite(folder, index, **changes):
    raw = json.loads((folder / "manifest.json").read_text())
    raw["artifacts"][index].update(changes)
    (folder / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("bad_path", ["../outside.pte", "/etc/passwd", "sub/../../x.pte", "a\\..\\b.pte"])
def test_load_manifest_refuses_paths_escaping_its_folder(full_export, tmp_path, bad_path):
    folder = _copy_export(full_export, tmp_path)
    _rewrite(folder, 0, path=bad_path)
    with pytest.raises(ManifestError, match="escapes|refused|path"):
        load_manifest(folder)


def test_load_manifest_refuses_a_symlink_pointing_outside(full_export, tmp_path):
    folder = _copy_export(full_export, tmp_path)
    outside = tmp_path / "elsewhere.pte"
    outside.write_bytes(b"not a model")
    (folder / "link.pte").symlink_to(outside)
    _rewrite(folder, 0, path="link.pte")
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(folder)


def test_verify_files_catches_a_changed_artifact(full_export, tmp_path):
    folder = _copy_export(full_export, tmp_path)
    manifest = load_manifest(folder, verify_files=True)
    target = manifest.artifacts[0].path
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    load_manifest(folder)  # without verification the paths are still safe
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(folder, verify_files=True)
    target.unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(folder, verify_files=True)


def test_missing_or_corrupt_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        load_manifest(tmp_path)
