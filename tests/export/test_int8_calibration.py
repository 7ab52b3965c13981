"""Static INT8 calibration: observers, layer groups, FP32 groups left in floating point (timm test_efficientnet)."""

from __future__ import annotations

import numpy as np
import pytest

from export import calibration as cal
from export.config import ExportConfig
from export.errors import ExportConfigError
from export.quant_report import count_pt2e_graph


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    from training.models import create_model

    torch.manual_seed(0)
    return create_model("test_efficientnet", num_classes=7).eval()


@pytest.fixture(scope="module")
def calibrated(tiny_model):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 3, 64, 64)).astype(np.float32)
    return images, cal.calibrate(tiny_model, images, observer="histogram")


def test_layer_groups_are_blocks_stem_head_and_classifier():
    from training.models import create_model

    b0 = create_model("efficientnet_b0", num_classes=7)
    groups = cal.layer_groups(b0)
    assert groups[0] == "conv_stem" and groups[-2:] == ["conv_head", "classifier"]
    assert len(groups) == 19 and "blocks.5.3" in groups  # 16 MBConv blocks of B0
    layers = cal.group_layers(b0, groups)
    assert sum(len(v) for v in layers.values()) == 82  # every conv/linear of B0, each in exactly one group
    assert layers["blocks.1.0"] == ["blocks.1.0.conv_pw", "blocks.1.0.conv_dw", "blocks.1.0.se.conv_reduce",
                                    "blocks.1.0.se.conv_expand", "blocks.1.0.conv_pwl"]
    assert cal.group_weight_bytes(b0, ["classifier"]) == {"classifier": 1280 * 7 * 4}


def test_percentile_observer_ignores_rare_outliers_that_stretch_minmax():
    import torch
    from torchao.quantization.pt2e import MinMaxObserver

    x = torch.linspace(-1.0, 1.0, 100_001)
    x[7] = 50.0  # one extreme activation in 100k
    percentile = cal.percentile_observer_class()()
    minmax = MinMaxObserver()
    for batch in (x, x * 0.5):
        percentile(batch)
        minmax(batch)
    assert float(minmax.max_val) == pytest.approx(50.0)
    # the mean of the two batches' 99.99th percentiles (~1.0 and ~0.5), not the outlier
    assert 0.7 < float(percentile.max_val) < 0.8
    assert -0.8 < float(percentile.min_val) < -0.7


@pytest.mark.parametrize("observer", cal.OBSERVERS)
def test_every_observer_calibrates_and_converts(tiny_model, observer):
    images = np.random.default_rng(1).normal(size=(4, 3, 64, 64)).astype(np.float32)
    converted = cal.convert(cal.calibrate(tiny_model, images, observer=observer, batch_size=2))
    report = count_pt2e_graph(converted, method=observer)
    assert report.layers_quantized == report.layers_total == 18
    import torch

    with torch.no_grad():
        eager = tiny_model(torch.from_numpy(images)).numpy()
    assert np.abs(cal.run_graph(converted, images) - eager).max() < 0.05


@pytest.mark.parametrize("scheme", cal.SCHEMES)
def test_calibrate_each_matches_one_calibration_per_observer(scheme):
    """One export + prepare shared by every observer gives exactly what a calibration of each alone gives."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.SiLU(), nn.Conv2d(8, 8, 3, groups=8), nn.SiLU(), nn.Conv2d(8, 8, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    images = np.random.default_rng(3).normal(size=(6, 3, 16, 16)).astype(np.float32)
    images[5] *= 20  # an outlier, so the observers' ranges differ
    observers = ("percentile", "minmax", "histogram")  # not OBSERVERS' order: any one may come first
    shared = dict(cal.calibrate_each(model, images, observers, batch_size=2, scheme=scheme))
    assert list(shared) == list(observers)
    batch = 1 if scheme == "hybrid" else 64
    outputs = {}
    for observer in observers[1:]:  # the ones whose observers were swapped in (the first is prepared as usual)
        alone = cal.calibrate(model, images, observer=observer, batch_size=2, scheme=scheme)
        kinds = {type(m).__name__ for m in shared[observer].modules()}
        assert kinds == {type(m).__name__ for m in alone.modules()}, observer
        outputs[observer] = cal.run_graph(cal.convert(shared[observer]), images, batch_size=batch)
        assert np.array_equal(outputs[observer], cal.run_graph(cal.convert(alone), images, batch_size=batch)), observer
    outputs["percentile"] = cal.run_graph(cal.convert(shared["percentile"]), images, batch_size=batch)
    assert not np.array_equal(outputs["minmax"], outputs["percentile"])  # the swap did change the ranges
    with torch.no_grad():
        fp32 = model(torch.from_numpy(images)).numpy()
    assert np.abs(outputs["histogram"] - fp32).max() < 0.15 * np.abs(fp32).max()  # still the model, quantized


def test_fp32_groups_keep_float_weights_and_only_groups_quantize_just_those(tiny_model, calibrated):
    _, prepared = calibrated
    head_fp32 = count_pt2e_graph(cal.convert(prepared, fp32_groups=["conv_head", "classifier"]), method="m")
    assert (head_fp32.layers_quantized, head_fp32.layers_total) == (16, 18)
    assert head_fp32.by_kind["linear"] == (0, 1)
    only = count_pt2e_graph(cal.convert(prepared, only_groups=["blocks.3.0"]), method="m")
    assert only.layers_quantized == len(cal.group_layers(tiny_model, ["blocks.3.0"])["blocks.3.0"]) == 5
    # converting copies: the calibrated model still converts fully afterwards
    assert count_pt2e_graph(cal.convert(prepared), method="m").layers_quantized == 18
    with pytest.raises(ValueError):
        cal.convert(prepared, fp32_groups=["conv_head"], only_groups=["classifier"])


def test_export_config_checks_observer_and_targets():
    with pytest.raises(ExportConfigError, match="calibration_observer"):
        ExportConfig(calibration_observer="mse")
    with pytest.raises(ExportConfigError, match="target_agreement"):
        ExportConfig(target_agreement=1.5)
    assert ExportConfig(int8_modes=("mixed",), calibration_data=None).needs_calibration


def test_calibration_is_asked_for_only_where_a_format_calibrates():
    """ONNX has no hybrid or mixed mode: an ONNX-only export of those needs no calibration data."""
    from export import executorch_export, onnx_export, torchscript
    from export.config import CALIBRATED_MODES

    assert set(CALIBRATED_MODES) == {"executorch", "onnx"}
    assert set(torchscript.MODES["int8"]) == {"dynamic"}
    assert set(executorch_export.MODES["int8"]) - {"dynamic", "qat"} == set(CALIBRATED_MODES["executorch"])
    assert set(onnx_export.MODES["int8"]) - {"dynamic", "qat"} == set(CALIBRATED_MODES["onnx"])
    assert not ExportConfig(formats=("onnx",), int8_modes=("hybrid", "mixed")).needs_calibration
    assert ExportConfig(formats=("onnx",), int8_modes=("static",)).needs_calibration
    assert ExportConfig(formats=("onnx", "executorch"), int8_modes=("hybrid",)).needs_calibration
    assert not ExportConfig(formats=("torchscript",), int8_modes=("static",)).needs_calibration
    assert not ExportConfig(formats=("executorch",), precisions=("fp32",), int8_modes=("static",)).needs_calibration
    assert ExportConfig().to_dict()["calibration_observer"] == "auto"


def test_auto_observer_measures_every_observer_and_keeps_the_one_that_agrees_best():
    """One image 300x brighter than the rest stretches min/max and histogram ranges: auto must not pick them."""
    import torch
    from torch import nn

    from export import sensitivity as sens

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5)).eval()
    images = np.random.default_rng(0).normal(size=(128, 3, 16, 16)).astype(np.float32)
    images[100] *= 300
    choice = sens.choose_observer(model, images)
    trials = {t.observer: t for t in choice.trials}
    assert set(trials) == set(cal.OBSERVERS)
    assert choice.observer == choice.trials[0].observer
    assert [t.top1_agreement for t in choice.trials] == sorted((t.top1_agreement for t in choice.trials), reverse=True)
    assert trials[choice.observer].top1_agreement > trials["minmax"].top1_agreement + 0.1
    assert choice.observer not in ("minmax", "histogram")
    # the calibrated model handed back is the chosen observer's: converting it reproduces its agreement
    with torch.no_grad():
        fp32 = model(torch.from_numpy(images)).numpy()
    agreement, _, _ = sens.divergence(fp32, cal.run_graph(cal.convert(choice.prepared), images))
    assert agreement == trials[choice.observer].top1_agreement
    record = choice.to_dict()
    assert [t["observer"] for t in record["trials"]] == [t.observer for t in choice.trials]
    assert "agreement" in record["chosen_by"]


def test_hybrid_scheme_quantizes_every_layer_depthwise_static_the_rest_at_run_time(tiny_model):
    """XNNPACK's dynamic INT8 leaves depthwise convs FP32; hybrid gives them calibrated static INT8."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    images = np.random.default_rng(2).normal(size=(4, 3, 64, 64)).astype(np.float32)
    graph = cal.export_batch_dynamic(tiny_model, torch.from_numpy(images[:2]))
    depthwise = [n for n in graph.graph.nodes if cal.is_depthwise_conv(n)]
    convs = [n for n in graph.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert 0 < len(depthwise) < len(convs)
    dynamic = prepare_pt2e(graph, XNNPACKQuantizer().set_global(cal.dynamic_config()))
    dynamic(torch.from_numpy(images))
    dynamic_report = count_pt2e_graph(convert_pt2e(dynamic), method="dynamic")
    assert dynamic_report.layers_quantized == 18 - len(depthwise)

    converted = cal.convert(cal.calibrate(tiny_model, images, observer="minmax", scheme="hybrid"))
    report = count_pt2e_graph(converted, method="hybrid")
    assert report.layers_quantized == report.layers_total == 18
    targets = [str(n.target) for n in converted.graph.nodes if n.op == "call_function"]
    assert any("choose_qparams" in t for t in targets)  # run-time ranges for the non-depthwise layers
    assert sum("quantize_per_tensor.default" in t and "dequantize" not in t for t in targets) >= len(depthwise)
    with torch.no_grad():
        eager = tiny_model(torch.from_numpy(images)).numpy()
    assert np.abs(cal.run_graph(converted, images, batch_size=1) - eager).max() < 0.05
    with pytest.raises(ValueError, match="scheme"):
        cal.calibrate(tiny_model, images, scheme="weights-only")


def test_depthwise_equalization_keeps_the_function_and_gives_every_channel_one_range(tiny_model):
    """Around each depthwise conv: input and pre-activation channels all reach the same magnitude, FP32 unchanged."""
    import torch

    from export.equalize import equalize_depthwise

    images = np.random.default_rng(3).normal(size=(16, 3, 64, 64)).astype(np.float32)
    equalized, record = equalize_depthwise(tiny_model, images, batch_size=8)
    depthwise = [n for n, m in tiny_model.named_modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    assert list(record.layers) == depthwise and not record.skipped and record.images == 16
    assert record.widest_over_narrowest > 2  # there was something to equalize
    assert [n for n, _ in equalized.named_modules() if n.endswith("conv_dw")] == depthwise  # names kept
    x = torch.from_numpy(images)
    with torch.no_grad():
        assert torch.allclose(equalized(x), tiny_model(x), atol=1e-4, rtol=1e-4)

    seen: dict[str, list[torch.Tensor]] = {}

    def record_ranges(name):
        def hook(module, inputs, output):
            seen[name] = [(inputs[0] * module.input_scale).abs().amax(dim=(0, 2, 3)), output]
        return hook

    for name in depthwise:
        equalized.get_submodule(name).register_forward_hook(record_ranges(name))
    with torch.no_grad():
        equalized(x)
    for name in depthwise:
        block = equalized.get_submodule(name.rsplit(".", 1)[0])
        bn = block.bn1 if type(block).__name__ == "DepthwiseSeparableConv" else block.bn2
        in_range, out = seen[name]
        pre_activation = torch.nn.functional.batch_norm(out, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                                        False, 0.0, bn.eps).abs().amax(dim=(0, 2, 3))
        for r in (in_range, pre_activation):
            live = r[r > r.max() * 1e-3]  # channels that never fire are clamped, not equalized
            assert float(live.min() / live.max()) > 0.999, name
    # the hybrid artifact's recipe on the equalized model: still every layer INT8
    converted = cal.convert(cal.calibrate(equalized, images, observer="minmax", scheme="hybrid"))
    report = count_pt2e_graph(converted, method="hybrid")
    assert report.layers_quantized == report.layers_total == 18
