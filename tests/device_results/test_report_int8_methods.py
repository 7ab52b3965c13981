"""The INT8 trade-off table: method names, the paired accuracy-change interval, cross-hardware rows left out."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from device_results.report.int8_methods import accuracy_change, int8_method_table, method_of
from device_results.report.views import Interval, PairView


def _pair(int8_key: str, *, n: int = 480, only_fp32: int = 6, only_int8: int = 2, cross: bool = False) -> PairView:
    return PairView(target="host-cpu", fp32_key="executorch-fp32", int8_key=int8_key, n_images=n,
                    fp32_accuracy={}, int8_accuracy={}, agreement=Interval(0.98, 0.96, 0.99),
                    only_fp32_correct=only_fp32, only_int8_correct=only_int8, mcnemar_p=0.3,
                    latency_ratio=Interval(0.9, 0.85, 0.95), size_ratio=0.27, cross_hardware=cross)


def test_method_of_model_keys():
    assert [method_of(k) for k in ("executorch-int8-mixed", "onnx-int8-static", "torchscript-int8-dynamic",
                                   "executorch-int8-qat", "executorch-fp32")] == ["mixed", "static", "dynamic",
                                                                                   "qat", "?"]


def test_accuracy_change_is_the_discordant_difference_with_a_paired_interval():
    change, low, high = accuracy_change(_pair("executorch-int8-static", n=400, only_fp32=6, only_int8=2))
    assert change == pytest.approx(100 * (2 - 6) / 400)  # -1.0 point
    half = 1.959963984540054 * math.sqrt((8 - 16 / 400) / 400**2) * 100
    assert (low, high) == (pytest.approx(change - half), pytest.approx(change + half))
    assert accuracy_change(_pair("x", only_fp32=0, only_int8=0)) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in accuracy_change(_pair("x", n=0)))


def test_table_lists_same_target_pairs_with_their_layer_counts():
    data = SimpleNamespace(
        pairs=[_pair("executorch-int8-mixed"), _pair("executorch-int8-static", cross=True)],
        artifacts=[SimpleNamespace(model_key="executorch-int8-mixed", layers_quantized=80, layers_total=82)],
        target=lambda label: SimpleNamespace(is_virtual=False))
    table = int8_method_table(data)  # type: ignore[arg-type]
    assert len(table.rows) == 1  # the cross-hardware pair is not a paired comparison
    row = dict(zip(table.columns, table.rows[0], strict=True))
    assert row["method"] == "mixed" and row["INT8 weight layers"] == "80/82" and row["images"] == "480"
    assert row["accuracy change, points [95% CI]"].startswith("-0.8 [")
    raw = dict(zip(table.raw_columns, table.raw_rows[0], strict=True))
    assert raw["accuracy_change_points"] == pytest.approx(-100 * 4 / 480) and raw["size_ratio"] == 0.27
