"""Fixtures for device tests: an isolated adb key, a virtual device, a connected Device, a tiny .pte.

``virtual_device`` and ``device`` are the fixtures other android_bench tests should use: the
device requires RSA auth and trusts only the test's own key (never the user's ~/.android).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from android_bench.device import connect
from android_bench.keys import ensure_adb_key
from android_bench.virtual import VirtualDevice


@pytest.fixture
def adb_key(tmp_path_factory, monkeypatch) -> Path:
    """A fresh adb key pair in a temporary HOME (so the user's ~/.android is never touched)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ANDROID_USER_HOME", raising=False)
    monkeypatch.delenv("ANDROID_SDK_HOME", raising=False)
    return ensure_adb_key(home / ".android" / "adbkey", create=True)


@pytest.fixture
def virtual_device(tmp_path, adb_key):
    """A running virtual device (auth on, trusting ``adb_key``) with its sandbox under tmp_path."""
    with VirtualDevice(tmp_path / "device-root", authorized_keys=Path(str(adb_key) + ".pub")) as vd:
        yield vd


@pytest.fixture
def device(virtual_device, adb_key):
    """A Device connected to ``virtual_device`` through adb-shell over TCP."""
    with connect(virtual_device.address, adb_key=adb_key) as dev:
        yield dev


@pytest.fixture(scope="session")
def tiny_pte(tmp_path_factory) -> Path:
    """A tiny ExecuTorch program (Linear 8 -> 3 + ReLU, float32 input [1, 8]), lowered once per session."""
    import torch
    from executorch.exir import to_edge

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return torch.relu(self.fc(x))

    torch.manual_seed(0)
    model = Tiny().eval()
    program = to_edge(torch.export.export(model, (torch.randn(1, 8),))).to_executorch()
    path = tmp_path_factory.mktemp("pte") / "tiny.pte"
    path.write_bytes(program.buffer)
    torch.save(model.state_dict(), path.with_suffix(".pt"))
    return path
