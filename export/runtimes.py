"""One host runtime interface for every artifact format, and for the eager model itself.

``load_runtime(path, fmt, device=..., threads=...)`` returns a ``HostRuntime`` whose
``run(x: float32 NCHW ndarray) -> logits ndarray`` hides each runtime's API. Verification uses it,
and so do the ablation's ``host-cpu`` / ``host-cuda`` targets.

Batches: ExecuTorch programs have a fixed input shape and TorchScript traces were made at one batch
size, so a runtime whose artifact was exported at batch ``B`` splits any input of ``N`` images into
chunks of ``B`` (padding the last chunk by repeating images and dropping the padded rows) and
concatenates the logits. ONNX artifacts have a dynamic batch axis and run the whole input at once.

Threads: ``threads`` sets the runtime's CPU thread count. For torch.jit and ExecuTorch that setting is
process-wide (``torch.set_num_threads`` / ExecuTorch's thread pool); onnxruntime's is per session.
Devices: ``cuda`` is offered for TorchScript FP32, ONNX (when onnxruntime has the CUDA provider) and
eager; ExecuTorch/XNNPACK and the lite interpreter are CPU runtimes.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emobench_common import quiet
from export.errors import RuntimeUnavailableError

log = logging.getLogger(__name__)

RUNTIME_FORMATS = ("torchscript", "torchscript-lite", "executorch", "onnx")


class HostRuntime(Protocol):
    """A loaded model that maps a float32 NCHW batch to float32 logits."""

    name: str
    device: str
    batch_size: int | None  # the fixed batch the artifact was exported with; None = any batch

    def run(self, x: np.ndarray) -> np.ndarray: ...


def _check_input(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"input must be a float32 NCHW ndarray, got {type(x).__name__} "
                         f"{getattr(x, 'shape', '')}")
    return np.ascontiguousarray(x, dtype=np.float32)


def run_in_chunks(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int | None) -> np.ndarray:
    """Run ``fn`` over ``x`` in chunks of exactly ``batch_size`` rows (padded), or at once when ``None``."""
    x = _check_input(x)
    n = x.shape[0]
    if batch_size is None or n == batch_size:
        return fn(x)
    outs = []
    for start in range(0, n, batch_size):
        chunk = x[start:start + batch_size]
        real = chunk.shape[0]
        if real < batch_size:
            reps = -(-batch_size // real)
            chunk = np.concatenate([chunk, np.tile(chunk, (reps, 1, 1, 1))])[:batch_size]
        outs.append(fn(np.ascontiguousarray(chunk))[:real])
    return np.concatenate(outs)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_device(device: str, fmt: str, *, cuda_ok: bool) -> None:
    if device not in ("cpu", "cuda"):
        raise RuntimeUnavailableError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda":
        if not cuda_ok:
            raise RuntimeUnavailableError(f"{fmt} artifacts run on the CPU only here, not on cuda")
        if not _cuda_available():
            raise RuntimeUnavailableError("device cuda requested but torch.cuda.is_available() is False",
                                          hint="run on a machine with an NVIDIA GPU, or use device cpu")


def read_embedded_metadata(path: Path) -> dict[str, Any]:
    """The ``emobench.json`` a TorchScript/lite file carries (empty when absent)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("extra/emobench.json")), None)
            return json.loads(zf.read(name)) if name else {}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


class TorchScriptRuntime:
    """A ``.pt`` file in torch.jit (CPU or CUDA)."""

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None) -> None:
        import torch

        meta = read_embedded_metadata(path)
        if device == "cuda" and meta.get("precision") == "int8":
            raise RuntimeUnavailableError(f"{path}: eager-quantized INT8 TorchScript runs on the CPU only")
        _check_device(device, "torchscript", cuda_ok=True)
        if threads:
            torch.set_num_threads(threads)
        self.name, self.device = f"torch.jit {path.name}", device
        self.batch_size = batch_size or (meta.get("input_shape") or [1])[0]
        with quiet.known_warnings():  # torch.jit.load's "deprecated, use torch.export" FutureWarning
            self._module = torch.jit.load(str(path), map_location=device).eval()

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self._module(torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()

    def run(self, x: np.ndarray) -> np.ndarray:
        return run_in_chunks(self._forward, x, self.batch_size)


class LiteRuntime:
    """A ``.ptl`` file in PyTorch Mobile's lite interpreter (CPU)."""

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None) -> None:
        import torch
        from torch.jit.mobile import _load_for_lite_interpreter

        _check_device(device, "torchscript-lite", cuda_ok=False)
        if threads:
            torch.set_num_threads(threads)
        meta = read_embedded_metadata(path)
        self.name, self.device = f"lite-interpreter {path.name}", device
        self.batch_size = batch_size or (meta.get("input_shape") or [1])[0]
        self._module = _load_for_lite_interpreter(str(path))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._module(torch.from_numpy(x)).float().numpy()

    def run(self, x: np.ndarray) -> np.ndarray:
        return run_in_chunks(self._forward, x, self.batch_size)


_executorch_threads: int | None = None


def set_executorch_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide threadpool, only when the size changes.

    The C++ side prints a line on every reset, and a benchmark resets before every call.

    Raises:
        ImportError / AttributeError / RuntimeError: this executorch build cannot resize its pool.
    """
    global _executorch_threads
    if threads == _executorch_threads:
        return
    with quiet.known_warnings():
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    with quiet.native_log_filter():
        _unsafe_reset_threadpool(threads)
    _executorch_threads = threads


class ExecuTorchRuntime:
    """A ``.pte`` program in ``executorch.runtime`` (XNNPACK on the CPU)."""

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None) -> None:
        with quiet.known_warnings():  # ExecuTorch's ExperimentalWarning on its bindings
            from executorch.runtime import Runtime

        _check_device(device, "executorch", cuda_ok=False)
        if threads:
            set_executorch_threads(int(threads))
        self.name, self.device = f"executorch {path.name}", device
        with quiet.native_log_filter():  # XNNPACK's CPU probing lines when its threadpool starts
            self._program = Runtime.get().load_program(path)
            self._method = self._program.load_method("forward")
        if self._method is None:
            raise RuntimeUnavailableError(f"{path} has no 'forward' method")
        sizes = tuple(self._method.metadata.input_tensor_meta(0).sizes())
        self.batch_size = batch_size or int(sizes[0])

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = self._method.execute([torch.from_numpy(x)])
        return out[0].float().numpy().copy()

    def run(self, x: np.ndarray) -> np.ndarray:
        return run_in_chunks(self._forward, x, self.batch_size)


class OnnxRuntime:
    """An ``.onnx`` file in onnxruntime (CPU provider, or CUDA when the CUDA provider is installed)."""

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None) -> None:
        import onnxruntime as ort

        _check_device(device, "onnx", cuda_ok=True)
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeUnavailableError(
                    "onnxruntime here has no CUDAExecutionProvider", hint="pip install onnxruntime-gpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        # onnxruntime's idle worker threads spin after every run by default. Runtimes are timed one
        # after another on the same cores, so the spinning would be charged to whatever runs next
        # (measured: a TorchScript model right after an ONNX one went from 9.9 to 18.7 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.name, self.device = f"onnxruntime {path.name}", device
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self._input = self._session.get_inputs()[0]
        dim0 = self._input.shape[0]
        self.batch_size = batch_size or (dim0 if isinstance(dim0, int) else None)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input.name: x})[0], dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        return run_in_chunks(self._forward, x, self.batch_size)


class EagerRuntime:
    """The checkpoint's model in eager PyTorch: the reference every artifact is compared with."""

    def __init__(self, model: Any, *, device: str = "cpu", threads: int | None = None, name: str = "eager") -> None:
        import torch

        _check_device(device, "eager", cuda_ok=True)
        if threads:
            torch.set_num_threads(threads)
        self.name, self.device = name, device
        self.batch_size: int | None = None  # any batch
        self._model = model.eval().to(device)

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, *, device: str = "cpu", threads: int | None = None) -> EagerRuntime:
        """Build from a checkpoint path or a loaded ``training.checkpoint.Checkpoint``."""
        from training.checkpoint import Checkpoint, load_checkpoint

        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        return cls(ckpt.build_model(), device=device, threads=threads, name=f"eager {ckpt.arch}")

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = _check_input(x)
        with torch.no_grad():
            return self._model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


_RUNTIMES: dict[str, type] = {
    "torchscript": TorchScriptRuntime,
    "torchscript-lite": LiteRuntime,
    "executorch": ExecuTorchRuntime,
    "onnx": OnnxRuntime,
}


def load_runtime(artifact_path: str | Path, fmt: str, *, device: str = "cpu", threads: int | None = None,
                 batch_size: int | None = None) -> HostRuntime:
    """Load an artifact in its own runtime.

    Args:
        artifact_path: the ``.pt`` / ``.ptl`` / ``.pte`` / ``.onnx`` file.
        fmt: its manifest format (``torchscript``, ``torchscript-lite``, ``executorch``, ``onnx``).
        device: ``cpu`` or ``cuda`` (guarded: raises where CUDA or the format's CUDA path is absent).
        threads: CPU threads for the runtime (None = the runtime's default).
        batch_size: override the batch the artifact was exported with (read from the file otherwise).

    Raises:
        RuntimeUnavailableError: unknown format, missing file, or a device the runtime cannot use.
    """
    path = Path(artifact_path)
    if fmt not in _RUNTIMES:
        raise RuntimeUnavailableError(f"unknown artifact format {fmt!r}; expected one of {', '.join(RUNTIME_FORMATS)}")
    if not path.is_file():
        raise RuntimeUnavailableError(f"artifact {path} does not exist")
    return _RUNTIMES[fmt](path, device=device, threads=threads, batch_size=batch_size)
