"""Bad input and partial failure: clear errors, nothing half-written, the other formats still done."""

from __future__ import annotations

import pickle

import pytest
import torch

from export.config import ExportConfig
from export.errors import ExportConfigError, OutputFolderError, VerificationDataError
from export.manifest import load_manifest
from export.pipeline import export_all
from training.checkpoint import CheckpointError


def _onnx_fp32(tiny_sample, **kw) -> ExportConfig:
    return ExportConfig(**{"formats": ("onnx",), "precisions": ("fp32",), "eval_data": tiny_sample["rafdb"],
                           "eval_images": 4, **kw})


def test_not_a_checkpoint_truncated_and_pickled_files_are_refused(tmp_path, tiny_checkpoint, tiny_sample):
    config = _onnx_fp32(tiny_sample)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not an emobench checkpoint"):
        export_all(other, tmp_path / "a", config)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        export_all(truncated, tmp_path / "b", config)
    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as fh:
        torch.save({"format": "emobench-checkpoint", "obj": pickle.PicklingError("x")}, fh)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        export_all(pickled, tmp_path / "c", config)


def test_static_int8_without_calibration_data_is_a_clear_error(tmp_path, tiny_checkpoint, tiny_sample):
    config = ExportConfig(formats=("executorch",), precisions=("int8",), int8_modes=("static",),
                          eval_data=tiny_sample["rafdb"])
    with pytest.raises(ExportConfigError, match="calibration"):
        export_all(tiny_checkpoint, tmp_path / "out", config)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_no_real_images_to_verify_with_is_a_clear_error(tmp_path, tiny_checkpoint):
    with pytest.raises(VerificationDataError, match="--eval-data|real images"):
        export_all(tiny_checkpoint, tmp_path / "out", ExportConfig(formats=("onnx",), precisions=("fp32",)))
    with pytest.raises(VerificationDataError, match="does not exist"):
        export_all(tiny_checkpoint, tmp_path / "out",
                   ExportConfig(formats=("onnx",), precisions=("fp32",), eval_data=tmp_path / "nope"))


@pytest.mark.parametrize("kwargs", [dict(formats=("tflite",)), dict(precisions=()), dict(int8_modes=("fast",)),
                                    dict(batch_size=0), dict(int8_min_agreement=1.5), dict(formats="onnx")])
def test_bad_config_values_are_refused(kwargs):
    with pytest.raises(ExportConfigError):
        ExportConfig(**kwargs)


def test_a_failing_format_is_recorded_and_the_others_complete(tmp_path, tiny_checkpoint, tiny_sample, monkeypatch):
    import export.onnx_export

    def broken(ctx, path):
        path.write_bytes(b"half an onnx file")  # a partial write that must never reach the output folder
        raise RuntimeError("exporter says: unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setattr(export.onnx_export, "_export_dynamo", broken)
    config = ExportConfig(formats=("onnx", "torchscript"), precisions=("fp32", "int8"), int8_modes=("dynamic",),
                          eval_data=tiny_sample["rafdb"], eval_images=4)
    manifest = export_all(tiny_checkpoint, tmp_path / "out", config)
    assert {(f.format, f.precision, f.mode) for f in manifest.failures} == {("onnx", "fp32", None),
                                                                           ("onnx", "int8", "dynamic")}
    assert all("aten::frobnicate" in f.error and "\n" not in f.error for f in manifest.failures)
    assert {a.format for a in manifest.artifacts} == {"torchscript", "torchscript-lite"}
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not any(n.endswith(".onnx") or n.startswith(".emobench-staging") for n in names), names
    assert load_manifest(tmp_path / "out", verify_files=True).failures == manifest.failures


def test_fp32_beyond_tolerance_fails_and_is_not_kept(tmp_path, tiny_checkpoint, tiny_sample):
    config = _onnx_fp32(tiny_sample, fp32_max_abs_diff=1e-12)  # ONNX Runtime differs by ~1e-8 from eager
    manifest = export_all(tiny_checkpoint, tmp_path / "out", config)
    assert not manifest.artifacts
    assert manifest.failures[0].error.startswith("ParityError") and "max_abs_diff < 1e-12" in manifest.failures[0].error
    assert not list((tmp_path / "out").glob("*.onnx"))


def test_output_folder_with_a_different_export_is_refused_unless_overwrite(tmp_path, tiny_checkpoint, tiny_sample):
    out = tmp_path / "out"
    first = export_all(tiny_checkpoint, out, _onnx_fp32(tiny_sample))
    again = export_all(tiny_checkpoint, out, _onnx_fp32(tiny_sample))  # the same export may be redone
    assert again.artifacts[0].sha256 == first.artifacts[0].sha256
    different = _onnx_fp32(tiny_sample, eval_images=3)
    with pytest.raises(OutputFolderError, match="already holds an export"):
        export_all(tiny_checkpoint, out, different)
    assert load_manifest(out, verify_files=True).config["eval_images"] == 4  # untouched
    replaced = export_all(tiny_checkpoint, out, ExportConfig(
        formats=("torchscript",), precisions=("fp32",), eval_data=tiny_sample["rafdb"], eval_images=3, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "test_efficientnet_torchscript_fp32.pt", "test_efficientnet_torchscript_fp32.ptl"])
    assert replaced.config["overwrite"] is True
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not an emobench export"):
        export_all(tiny_checkpoint, foreign, _onnx_fp32(tiny_sample))
