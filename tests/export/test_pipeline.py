"""The whole export of a tiny real model: every artifact exists, reloads in its runtime and matches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from export.artifact import artifact_filename
from export.data import load_image_set
from export.manifest import load_manifest
from export.runtimes import EagerRuntime, load_runtime
from export.verify import compare_logits

# the session's full_export (~45 s) is built once per xdist worker: keep its users on one
pytestmark = pytest.mark.xdist_group("full_export")

EXPECTED_KEYS = {
    ("torchscript", "fp32", None), ("torchscript-lite", "fp32", None),
    ("torchscript", "int8", "dynamic"), ("torchscript-lite", "int8", "dynamic"),
    ("executorch", "fp32", None), ("executorch", "int8", "dynamic"), ("executorch", "int8", "static"),
    ("onnx", "fp32", None), ("onnx", "int8", "dynamic"), ("onnx", "int8", "static"),
}


def _verification_images(manifest, checkpoint_path):
    from training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    vd = manifest.verification_data
    images = load_image_set(vd["root"], split=vd["split"], count=vd["images"], spec=ckpt.input_spec, purpose="test")
    assert list(images.image_ids) == vd["image_ids"]
    return ckpt, images


def test_every_format_precision_mode_is_exported(full_export):
    manifest = full_export
    assert not manifest.failures, manifest.failures
    assert {a.key for a in manifest.artifacts} == EXPECTED_KEYS
    assert [(s.format, s.precision, s.mode) for s in manifest.skipped] == [("torchscript", "int8", "static")]
    on_disk = sorted(p.name for p in manifest.folder.iterdir())
    etrecords = [a.details["etrecord"]["path"] for a in manifest.artifacts if a.format == "executorch"]
    assert len(etrecords) == 3 and all(name.endswith(".etrecord") for name in etrecords)  # one beside each .pte
    assert on_disk == sorted([a.path.name for a in manifest.artifacts] + etrecords + ["manifest.json"])  # no staging left
    for a in manifest.artifacts:
        assert a.path.name == artifact_filename("test_efficientnet", a.format, a.precision, a.mode)
        assert a.size_bytes == a.path.stat().st_size > 10_000
        assert a.parity.images == 12 and a.batch_size == 1
    assert manifest.find("executorch", "int8", "dynamic").path.name == "test_efficientnet_executorch_int8-dynamic.pte"
    reloaded = load_manifest(manifest.folder, verify_files=True)
    assert reloaded.artifacts == manifest.artifacts


def test_fp32_artifacts_match_eager_and_int8_is_close(full_export):
    for a in full_export.artifacts:
        if a.precision == "fp32":
            assert a.parity.passed and a.parity.max_abs_diff < 1e-3, a.label
            assert a.parity.top1_agreement == 1.0
        else:
            # Real INT8 changes the numbers: not bit-identical, but close to the eager logits.
            assert 1e-6 < a.parity.max_abs_diff < 0.5, (a.label, a.parity)
            assert a.parity.mean_abs_diff <= a.parity.max_abs_diff


def test_each_artifact_reloads_in_its_runtime_and_reproduces_the_recorded_parity(full_export, tiny_checkpoint):
    ckpt, images = _verification_images(full_export, tiny_checkpoint)
    eager = EagerRuntime.from_checkpoint(ckpt).run(images.images)
    for a in full_export.artifacts:
        # At the exported batch size, as verified: dynamic INT8 scales activations per batch.
        logits = load_runtime(a.path, a.format, batch_size=a.batch_size).run(images.images)
        assert logits.shape == (12, 7)
        parity = compare_logits(eager, logits, images.labels)
        assert parity.max_abs_diff == pytest.approx(a.parity.max_abs_diff, rel=1e-3, abs=1e-7), a.label
        assert parity.top1_agreement == a.parity.top1_agreement


def test_batch_one_artifacts_loop_over_a_larger_batch(full_export, tiny_checkpoint):
    _, images = _verification_images(full_export, tiny_checkpoint)
    x = images.images[:5]
    for fmt, precision, mode in [("executorch", "int8", "static"), ("torchscript-lite", "fp32", None),
                                 ("onnx", "fp32", None)]:
        runtime = load_runtime(full_export.find(fmt, precision, mode).path, fmt)
        batched = runtime.run(x)
        one_by_one = np.concatenate([runtime.run(x[i:i + 1]) for i in range(5)])
        np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert load_runtime(full_export.find("executorch", "fp32").path, "executorch").batch_size == 1
    assert load_runtime(full_export.find("onnx", "fp32").path, "onnx").batch_size is None  # dynamic axis


def test_quantization_reports_count_what_the_artifacts_hold(full_export):
    et_dyn = full_export.find("executorch", "int8", "dynamic").quantization
    # XNNPACK dynamic: Linear and regular convs become INT8, depthwise convs stay FP32.
    assert et_dyn.by_kind["conv2d-depthwise"][0] == 0 and et_dyn.by_kind["conv2d-depthwise"][1] > 0
    assert et_dyn.by_kind["conv2d"][0] == et_dyn.by_kind["conv2d"][1] > 0
    assert et_dyn.by_kind["linear"] == (1, 1)
    et_static = full_export.find("executorch", "int8", "static").quantization
    assert et_static.layers_quantized == et_static.layers_total == et_dyn.layers_total
    # The study's method: eager quantize_dynamic touches only the Linear head, and the file does not shrink.
    for fmt in ("torchscript", "torchscript-lite"):
        ts = full_export.find(fmt, "int8", "dynamic").quantization
        assert ts.layers_quantized == 1 and ts.by_kind["linear"] == (1, 1)
        assert ts.by_kind["conv2d"][0] == 0 and ts.layers_total == et_dyn.layers_total
        assert ts.size_ratio_to_fp32 > 0.95
    for key in (("executorch", "int8", "dynamic"), ("executorch", "int8", "static"), ("onnx", "int8", "dynamic"),
                ("onnx", "int8", "static")):
        q = full_export.find(*key).quantization
        assert q.weight_bytes_after < 0.4 * q.weight_bytes_before, key
        assert q.weight_bytes_before == et_dyn.weight_bytes_before  # same layers counted in every format
        twin = full_export.find(key[0], "fp32")
        assert q.size_ratio_to_fp32 == pytest.approx(full_export.find(*key).size_bytes / twin.size_bytes, abs=1e-4)
        assert q.size_ratio_to_fp32 < 0.5


def test_details_record_delegation_and_dynamic_axis(full_export):
    et = full_export.find("executorch", "fp32")
    assert et.details["xnnpack_delegate_calls"] >= 1
    assert et.details["ops_outside_delegate"] == {}  # the whole graph runs in XNNPACK
    assert full_export.find("onnx", "fp32").details["dynamic_batch"] is True


def test_manifest_records_the_contract(full_export, tiny_checkpoint, full_config):
    from emobench_common.fileio import sha256_file

    raw = json.loads(full_export.path.read_text())
    assert raw["checkpoint"]["sha256"] == sha256_file(tiny_checkpoint)
    assert raw["arch"] == "test_efficientnet" and len(raw["class_names"]) == 7
    assert raw["input"]["shape"] == [1, 3, 64, 64] and raw["input"]["mean"] == [0.5, 0.5, 0.5]
    assert raw["config"] == full_config.to_dict()
    assert raw["calibration_data"]["images"] == 8 and raw["calibration_data"]["split"] == "train"
    assert raw["verification_data"]["split"] == "test"
    assert all(not os.path.isabs(a["path"]) for a in raw["artifacts"])
