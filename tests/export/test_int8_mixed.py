"""Sensitivity ranking and mixed precision: pure parts, the search on a real model, and the export of a mixed .pte."""

from __future__ import annotations

import numpy as np
import pytest

from export import calibration as cal
from export import sensitivity as sens


def test_divergence_of_identical_and_flipped_logits():
    a = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    assert sens.divergence(a, a) == (1.0, pytest.approx(0.0, abs=1e-12), 0.0)
    flipped = a[:, ::-1].copy()
    agreement, kl, mad = sens.divergence(a, flipped)
    assert agreement == 0.5  # row 2 is symmetric, row 1 changes its answer
    assert kl > 0.5 and mad == pytest.approx(np.abs(a - flipped).mean())


def test_rounding_floor_rounds_each_weight_to_its_channel_grid_and_counts_the_answers_that_change():
    import torch
    from torch import nn

    model = nn.Linear(2, 2)
    with torch.no_grad():
        # row 0: grid step 1/127 ~ 0.0079, so 0.003 rounds to 0; row 1 is on its grid already
        model.weight.copy_(torch.tensor([[1.0, 0.003], [1.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, 0.002]))
    rounded = sens.round_weights_int8(model)
    assert rounded.weight.tolist() == [[1.0, 0.0], [1.0, 0.0]] and model.weight[0, 1].item() == pytest.approx(0.003)
    # image 1 ([0, 1]): FP32 logits (0.003, 0.002) -> class 0; rounded (0, 0.002) -> class 1. Image 2 keeps class 1.
    images = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    floor = sens.rounding_floor(model, images)
    assert floor.images == 2 and floor.top1_agreement == 0.5
    assert floor.mean_abs_diff == pytest.approx(0.003 / 4)
    assert floor.near_tie_share == 0.0  # both margins (0.001, 0.002) exceed the mean change 0.00075
    record = floor.to_dict()
    assert record["measured_on"] == "calibration images" and record["top1_agreement"] == 0.5


def test_rounding_floor_of_a_real_model_keeps_per_channel_maxima_and_lands_on_the_grid(model_and_calibration):
    import torch

    model = model_and_calibration[0]
    rounded = sens.round_weights_int8(model)
    for (name, before), after in zip(model.state_dict().items(), rounded.state_dict().values(), strict=True):
        if name.endswith("weight") and before.dim() in (2, 4):
            scale = before.abs().flatten(1).amax(1) / 127
            steps = after.flatten(1) / scale[:, None]
            assert torch.allclose(steps, steps.round(), atol=1e-3), name
            assert torch.allclose(after.abs().flatten(1).amax(1), before.abs().flatten(1).amax(1)), name


def test_rank_puts_lowest_agreement_then_highest_divergence_first():
    def g(name, agreement, kl):
        return sens.GroupSensitivity(group=name, layers=1, weight_bytes_fp32=4, top1_agreement=agreement,
                                     kl_divergence=kl, mean_abs_diff=kl)

    ranked = sens.rank([g("a", 1.0, 0.3), g("b", 0.9, 0.1), g("c", 1.0, 0.5), g("d", 0.9, 0.2)])
    assert [r.group for r in ranked] == ["d", "b", "c", "a"]


@pytest.fixture(scope="module")
def model_and_calibration():
    import torch

    from training.models import create_model

    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=7).eval()
    images = np.random.default_rng(0).normal(size=(8, 3, 64, 64)).astype(np.float32)
    return model, images, cal.calibrate(model, images, observer="minmax")


def test_sensitivity_covers_every_group_and_mixed_search_obeys_target_and_layer_limit(model_and_calibration):
    model, images, prepared = model_and_calibration
    seen: list[sens.GroupSensitivity] = []
    ranking = sens.analyse_sensitivity(model, prepared, images, on_group=seen.append)
    assert sorted(r.group for r in ranking) == sorted(cal.layer_groups(model)) == sorted(r.group for r in seen)
    assert ranking == sens.rank(ranking)
    assert all(0.0 <= r.top1_agreement <= 1.0 and r.kl_divergence >= -1e-9 for r in ranking)

    easy = sens.select_fp32_groups(model, prepared, images, ranking, target_agreement=0.0)
    assert easy.fp32_groups == () and easy.target_met and easy.stopped_because == "target met"

    # an unreachable target with room for 3 of 18 layers: only 1-layer groups fit, most sensitive first
    capped = sens.select_fp32_groups(model, prepared, images, ranking, target_agreement=1.01,
                                     max_fp32_layer_share=3 / 18, max_fp32_weight_share=1.0)
    layers = cal.group_layers(model, cal.layer_groups(model))
    assert not capped.target_met and "limit" in capped.stopped_because
    assert sum(len(layers[g]) for g in capped.fp32_groups) <= 3
    order = [r.group for r in ranking if len(layers[r.group]) == 1]
    assert list(capped.fp32_groups) == order[:len(capped.fp32_groups)]
    assert len(capped.steps) == len(capped.fp32_groups) + 1
    assert capped.fp32_layers == tuple(n for g in capped.fp32_groups for n in layers[g])

    # a weight-byte budget of 1% of the weights admits only the small groups
    weights = cal.group_weight_bytes(model, cal.layer_groups(model))
    small = sens.select_fp32_groups(model, prepared, images, ranking, target_agreement=1.01,
                                    max_fp32_layer_share=1.0, max_fp32_weight_share=0.01)
    assert sum(weights[g] for g in small.fp32_groups) <= 0.01 * sum(weights.values())
    assert "weight bytes" in small.stopped_because


def test_export_mixed_records_fp32_layers_calibration_and_sensitivity(tmp_path, tiny_checkpoint, tiny_sample):
    from export.config import ExportConfig
    from export.manifest import load_manifest
    from export.pipeline import export_all

    config = ExportConfig(formats=("executorch",), precisions=("fp32", "int8"), int8_modes=("static", "mixed"),
                          calibration_data=tiny_sample["rafdb"], calibration_images=8, calibration_observer="percentile",
                          eval_data=tiny_sample["rafdb"], eval_images=8, target_agreement=1.0,
                          max_fp32_layer_share=0.2, max_fp32_weight_share=1.0, sensitivity=True)
    manifest = export_all(tiny_checkpoint, tmp_path / "out", config)
    assert not manifest.failures, manifest.failures
    by_mode = {a.mode: a for a in manifest.artifacts}
    static, mixed = by_mode["static"], by_mode["mixed"]
    assert mixed.path.name == "test_efficientnet_executorch_int8-mixed.pte" and mixed.parity is not None
    for artifact in (static, mixed):
        assert artifact.details["calibration"] == {"observer": "percentile", "images": 8, "split": "train"}
        assert len(artifact.details["sensitivity"]["ranked"]) == 8
        floor = artifact.details["weight_rounding"]  # measured once per export, recorded by every calibrated mode
        assert floor == static.details["weight_rounding"] and floor["images"] == 8
        assert 0 <= floor["top1_agreement"] <= 1 and floor["mean_abs_diff"] > 0
    info = mixed.details["mixed"]
    assert info["target_met"] == (info["reached_agreement"] >= 1.0)
    if info["target_met"]:
        assert info["stopped_because"] == "target met"
    else:
        assert "limit" in info["stopped_because"]
    q, static_q = mixed.quantization, static.quantization
    assert q is not None and static_q is not None
    # what the manifest says stayed FP32 is what the lowered graph holds, within the 20% layer limit
    assert q.layers_total - q.layers_quantized == len(info["fp32_layers"]) <= 3
    assert len(info["steps"]) == len(info["fp32_groups"]) + 1
    assert "kept FP32" in q.method and "percentile" in q.method
    assert static_q.layers_quantized == static_q.layers_total
    assert info["size_cost_bytes_estimate"] == info["fp32_weight_bytes"] - info["fp32_weight_bytes"] // 4
    # the manifest (schema: mode "mixed", free-form details) loads back with every file checked
    loaded = load_manifest(manifest.path, verify_files=True)
    assert loaded.config["calibration_observer"] == "percentile" and loaded.config["calibration_images"] == 8
    assert {a.mode for a in loaded.artifacts} == {None, "static", "mixed"}


def test_export_command_mixed_with_sensitivity_prints_the_ranking(tmp_path, tiny_checkpoint, tiny_sample):
    from click.testing import CliRunner

    from emobench import cli
    from export.manifest import load_manifest

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "export", str(tiny_checkpoint), "--out", str(out), "--formats", "executorch", "--precisions", "int8",
        "--int8-mode", "mixed", "--calibration-data", str(tiny_sample["rafdb"]), "--calibration-images", "4",
        "--eval-images", "4", "--sensitivity", "--target-agreement", "0.5",
    ])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out, verify_files=True)
    (mixed,) = manifest.artifacts
    # the default observer, auto: every observer tried, the best one's name and all trials recorded
    calibration = mixed.details["calibration"]
    assert mixed.mode == "mixed" and calibration["requested"] == "auto" and manifest.config["calibration_observer"] == "auto"
    assert calibration["observer"] == calibration["trials"][0]["observer"]
    assert {t["observer"] for t in calibration["trials"]} == {"minmax", "moving_average", "histogram", "percentile"}
    assert f"{calibration['observer']} observer" in mixed.quantization.method
    assert manifest.config["target_agreement"] == 0.5
    assert "quantization sensitivity" in result.output and "conv_stem" in result.output
    floor = mixed.details["weight_rounding"]
    assert f"INT8 weight rounding alone (activations FP32): top-1 agreement {100 * floor['top1_agreement']:.1f}%" \
        in " ".join(result.output.split())
    assert f"agreement on the calibration images {100 * mixed.details['mixed']['reached_agreement']:.1f}%" \
        in " ".join(result.output.split())


def test_export_hybrid_pte_has_every_layer_int8_and_onnx_records_a_skip(tmp_path, tiny_checkpoint, tiny_sample):
    """hybrid: the depthwise convs static (calibrated, auto observer recorded), the rest dynamic; ExecuTorch only."""
    from export.config import ExportConfig
    from export.manifest import load_manifest
    from export.pipeline import export_all

    config = ExportConfig(formats=("executorch", "onnx"), precisions=("int8",), int8_modes=("dynamic", "hybrid"),
                          calibration_data=tiny_sample["rafdb"], calibration_images=8,
                          calibration_observer="auto", eval_data=tiny_sample["rafdb"], eval_images=8)
    manifest = export_all(tiny_checkpoint, tmp_path / "out", config)
    assert not manifest.failures, manifest.failures
    by_key = {(a.format, a.mode): a for a in manifest.artifacts}
    hybrid, dynamic = by_key[("executorch", "hybrid")], by_key[("executorch", "dynamic")]
    assert ("onnx", "hybrid") not in by_key and ("onnx", "dynamic") in by_key
    assert [(s.format, s.mode) for s in manifest.skipped] == [("onnx", "hybrid")]
    assert hybrid.path.name == "test_efficientnet_executorch_int8-hybrid.pte" and hybrid.parity is not None
    q, dq = hybrid.quantization, dynamic.quantization
    assert q is not None and dq is not None
    assert q.layers_quantized == q.layers_total == dq.layers_total > dq.layers_quantized  # the depthwise convs too
    assert "depthwise" in q.method and hybrid.details["ops_outside_delegate"] == {}
    calibration = hybrid.details["calibration"]
    assert calibration["requested"] == "auto" and calibration["images"] == 8
    assert {t["observer"] for t in calibration["trials"]} == set(cal.OBSERVERS)
    equalized = hybrid.details["depthwise_equalization"]  # on by default (ExportConfig.equalize_depthwise)
    assert equalized["layers"] and not equalized["skipped"] and "equalized" in q.method
    assert hybrid.details["weight_rounding"]["images"] == 8 and "weight_rounding" not in dynamic.details
    loaded = load_manifest(manifest.path, verify_files=True)
    assert {a.mode for a in loaded.artifacts} == {"dynamic", "hybrid"}
