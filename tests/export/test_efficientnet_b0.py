"""The mission's model itself: EfficientNet-B0 at 224x224 to ExecuTorch FP32 and dynamic INT8."""

from __future__ import annotations

import pytest

from export.config import ExportConfig
from export.pipeline import export_all
from tests.export.conftest import make_tiny_checkpoint


@pytest.mark.slow
def test_efficientnet_b0_executorch_int8_is_under_a_third_of_fp32(tmp_path, tiny_sample):
    checkpoint = make_tiny_checkpoint(tmp_path / "b0.pt", arch="efficientnet_b0", image_size=224)
    config = ExportConfig(formats=("executorch",), precisions=("fp32", "int8"), int8_modes=("dynamic",),
                          eval_data=tiny_sample["rafdb"], eval_images=2)
    manifest = export_all(checkpoint, tmp_path / "out", config)
    assert not manifest.failures, manifest.failures
    fp32 = manifest.find("executorch", "fp32")
    int8 = manifest.find("executorch", "int8", "dynamic")
    assert fp32.size_bytes > 15_000_000  # 4M+ FP32 parameters
    assert int8.size_bytes <= 0.32 * fp32.size_bytes, (int8.size_bytes, fp32.size_bytes)
    assert fp32.parity.max_abs_diff < 1e-3
    q = int8.quantization
    assert q.by_kind["linear"] == (1, 1) and q.by_kind["conv2d"][0] == q.by_kind["conv2d"][1] > 30
    assert q.by_kind["conv2d-depthwise"][0] == 0 and q.by_kind["conv2d-depthwise"][1] == 16
