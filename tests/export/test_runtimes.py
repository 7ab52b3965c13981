"""The uniform host runtime: device guards, input checks, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from export.errors import RuntimeUnavailableError
from export.runtimes import EagerRuntime, load_runtime, run_in_chunks

# the session's full_export (~45 s) is built once per xdist worker: keep its users on one
pytestmark = pytest.mark.xdist_group("full_export")


def test_run_in_chunks_pads_the_last_chunk_and_drops_the_padding():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x.reshape(x.shape[0], -1)[:, :2] * 2

    x = np.arange(7 * 3 * 2 * 2, dtype=np.float32).reshape(7, 3, 2, 2)
    out = run_in_chunks(fn, x, 3)
    assert calls == [3, 3, 3] and out.shape == (7, 2)
    np.testing.assert_array_equal(out, x.reshape(7, -1)[:, :2] * 2)
    with pytest.raises(ValueError, match="NCHW"):
        run_in_chunks(fn, x[0], 3)


def test_runtime_guards(full_export, tmp_path, tiny_checkpoint):
    import torch

    with pytest.raises(RuntimeUnavailableError, match="unknown artifact format"):
        load_runtime(full_export.find("onnx", "fp32").path, "tflite")
    with pytest.raises(RuntimeUnavailableError, match="does not exist"):
        load_runtime(tmp_path / "missing.pte", "executorch")
    for fmt in ("executorch", "torchscript-lite"):
        with pytest.raises(RuntimeUnavailableError, match="CPU only"):
            load_runtime(full_export.find(fmt, "fp32").path, fmt, device="cuda")
    with pytest.raises(RuntimeUnavailableError, match="CPU only"):
        load_runtime(full_export.find("torchscript", "int8", "dynamic").path, "torchscript", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeUnavailableError, match="cuda"):
            load_runtime(full_export.find("torchscript", "fp32").path, "torchscript", device="cuda")
        with pytest.raises(RuntimeUnavailableError, match="cuda"):
            EagerRuntime.from_checkpoint(tiny_checkpoint, device="cuda")
    runtime = load_runtime(full_export.find("onnx", "int8", "static").path, "onnx", threads=1)
    assert runtime.run(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, 7)


def test_onnx_runtime_leaves_no_threads_spinning_after_a_run(full_export):
    """Regression: onnxruntime's workers spun ~35 ms of CPU after each run by default, which was
    charged to the next runtime timed on the same cores (TorchScript right after ONNX: 9.9 -> 18.7 ms)."""
    import time

    runtime = load_runtime(full_export.find("onnx", "fp32").path, "onnx", threads=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    idle_cpu_ms = []
    for _ in range(3):
        runtime.run(x)
        started = time.process_time()
        time.sleep(0.1)
        idle_cpu_ms.append((time.process_time() - started) * 1e3)
    assert min(idle_cpu_ms) < 10, f"CPU burnt while idle after a run: {idle_cpu_ms} ms"
