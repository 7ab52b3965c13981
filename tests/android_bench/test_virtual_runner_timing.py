"""The virtual device's stand-in executor_runner times ``method.execute()`` alone, as ExecuTorch's does."""

from __future__ import annotations

import re
import time

import numpy as np
import torch

TMP = "/data/local/tmp"
SLOW_S = 0.2


def test_stand_in_runner_times_execute_only_not_the_input_copy(device, tiny_pte, tmp_path, monkeypatch):
    device.push(tiny_pte, f"{TMP}/tiny.pte")
    raw = tmp_path / "input.raw"
    raw.write_bytes(np.ones((1, 8), dtype=np.float32).tobytes())
    device.push(raw, f"{TMP}/input.raw")
    original = torch.Tensor.clone

    def slow_clone(self, *args, **kwargs):  # the virtual device serves from this process: it sees this
        time.sleep(SLOW_S)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "clone", slow_clone)
    started = time.perf_counter()
    result = device.shell([f"{TMP}/executor_runner", f"--model_path={TMP}/tiny.pte", f"--inputs={TMP}/input.raw",
                           "--num_executions", "3"], check=False)
    wall_s = time.perf_counter() - started
    assert result.exit_status == 0, result.stderr
    ms = [float(v) for v in re.findall(r"Iteration \d+ of 3: ([0-9.]+) ms", result.stderr)]
    assert len(ms) == 3, result.stderr
    assert wall_s >= 3 * SLOW_S  # the input copies did happen, and were slow ...
    assert max(ms) < SLOW_S * 1e3 / 2, ms  # ... but outside the timed region
