"""`emobench export`: the thin CLI, the --latest pointer, one-line errors."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from emobench import cli
from emobench_common.errors import EmobenchError
from export.errors import ExportConfigError
from export.manifest import load_manifest
from export.pipeline import find_latest_checkpoint


def test_export_command_writes_a_verified_export(tmp_path, tiny_checkpoint, tiny_sample):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "export", str(tiny_checkpoint), "--out", str(out), "--formats", "onnx", "--precisions", "fp32,int8",
        "--int8-mode", "both", "--calibration-data", str(tiny_sample["fer2013"]), "--calibration-images", "4",
        "--eval-images", "4",
    ])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out, verify_files=True)
    assert {a.key for a in manifest.artifacts} == {("onnx", "fp32", None), ("onnx", "int8", "dynamic"),
                                                   ("onnx", "int8", "static")}
    # No --eval-data: verification falls back to the calibration root (FER-2013 test split here).
    assert manifest.verification_data["kind"] == "fer2013_csv" and manifest.verification_data["split"] == "test"
    assert "test_efficientnet_onnx_int8-static.onnx" in result.output and "manifest:" in result.output


def test_export_command_errors_are_one_line(tmp_path, tiny_sample):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    result = CliRunner().invoke(cli, ["export", str(bad), "--out", str(tmp_path / "o"),
                                      "--eval-data", str(tiny_sample["rafdb"])])
    assert result.exit_code == 1
    assert "Error:" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "CHECKPOINT or --latest" in result.output
    result = CliRunner().invoke(cli, ["export", str(bad), "--out", str(tmp_path / "o"), "--formats", "tflite"])
    assert result.exit_code == 2 and "tflite" in result.output


def test_export_command_exits_1_when_an_artifact_fails(tmp_path, tiny_checkpoint, tiny_sample, monkeypatch):
    import export.onnx_export

    def broken(ctx, path):
        raise RuntimeError("no exporter today")

    monkeypatch.setattr(export.onnx_export, "_export_dynamo", broken)
    result = CliRunner().invoke(cli, ["export", str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--formats",
                                      "onnx", "--precisions", "fp32", "--eval-data", str(tiny_sample["rafdb"]),
                                      "--eval-images", "2"])
    assert result.exit_code == 1 and "no exporter today" in result.output
    assert load_manifest(tmp_path / "o").failures[0].error == "RuntimeError: no exporter today"


def _run(runs, name):
    run = runs / name
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"x")
    return run


def test_find_latest_checkpoint_reads_a_symlink_or_a_text_pointer(tmp_path):
    runs = tmp_path / "runs" / "phase2"
    old, new = _run(runs, "2024-01-01"), _run(runs, "2024-02-01")
    (runs / "latest").symlink_to(new.name)
    assert find_latest_checkpoint(runs) == (new / "checkpoint.pt").resolve()
    (runs / "latest").unlink()
    (runs / "latest").write_text(f"{old.name}\n")
    assert find_latest_checkpoint(runs) == old / "checkpoint.pt"
    (runs / "latest").write_text(str(new))
    assert find_latest_checkpoint(runs) == new / "checkpoint.pt"
    os.unlink(new / "checkpoint.pt")
    with pytest.raises(ExportConfigError, match="no checkpoint.pt"):
        find_latest_checkpoint(runs)
    with pytest.raises(EmobenchError, match="no 'latest' pointer|no finished training run"):
        find_latest_checkpoint(tmp_path / "empty")


def test_export_latest_uses_the_pointer(tmp_path, tiny_checkpoint, tiny_sample):
    runs = tmp_path / "runs"
    run = runs / "run1"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(tiny_checkpoint.read_bytes())
    (runs / "latest").symlink_to("run1")
    result = CliRunner().invoke(cli, ["export", "--latest", str(runs), "--out", str(tmp_path / "o"), "--formats",
                                      "torchscript", "--precisions", "fp32", "--eval-data",
                                      str(tiny_sample["custom"]), "--eval-images", "3"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path / "o")
    assert manifest.checkpoint["path"] == str((run / "checkpoint.pt").resolve())
    assert manifest.verification_data["kind"] == "custom"
