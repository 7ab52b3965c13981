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


# --- (issue 13) a model emobench did not export, for the native runner's tests
class SmallNet:
    """Conv -> BN -> SiLU -> depthwise conv -> SE-style multiply -> pool -> Linear: the kinds of layer B0 has."""

    @staticmethod
    def build():
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
                self.bn = torch.nn.BatchNorm2d(8)
                self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
                self.se = torch.nn.Conv2d(8, 8, 1)
                self.fc = torch.nn.Linear(8, 5)

            def forward(self, x):
                y = torch.nn.functional.silu(self.bn(self.conv(x)))
                y = self.dw(y)
                y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
                return self.fc(y.mean((2, 3)))

        torch.manual_seed(1)
        net = Net().eval()
        with torch.no_grad():
            net.bn.running_mean.uniform_(-0.5, 0.5)
            net.bn.running_var.uniform_(0.5, 2.0)
        return net


@pytest.fixture(scope="session")
def foreign_pte(tmp_path_factory) -> dict[str, Path]:
    """A model emobench did not export: lowered here with to_edge_transform_and_lower + XNNPACK."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    net = SmallNet.build()
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(7))
    program = to_edge_transform_and_lower(torch.export.export(net, (x,)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    folder = tmp_path_factory.mktemp("foreign")
    (folder / "net.pte").write_bytes(program.buffer)
    (folder / "input.bin").write_bytes(x.numpy().tobytes())
    with torch.no_grad():
        expected = net(x).numpy()
    import numpy as np

    np.save(folder / "expected.npy", expected)
    return {"pte": folder / "net.pte", "input": folder / "input.bin", "expected": folder / "expected.npy"}
