"""Count what INT8 quantization really did, from the artifact or the graph lowered into it.

Nothing here is assumed from the quantizer's settings: each counter walks the real object (a
TorchScript module loaded from the file, the ONNX graph in the file, the converted pt2e graph that
ExecuTorch lowers) and looks at the dtype each weight-bearing layer's weight is stored in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from export.artifact import QuantReport

_FP32_BYTES = 4


@dataclass
class _Tally:
    by_kind: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    before: int = 0
    after: int = 0

    def add(self, kind: str, *, quantized: bool, numel: int, stored_bytes: int) -> None:
        self.by_kind[kind][1] += 1
        if quantized:
            self.by_kind[kind][0] += 1
        self.before += numel * _FP32_BYTES
        self.after += stored_bytes

    def report(self, *, method: str, counted_from: str) -> QuantReport:
        kinds = {k: (v[0], v[1]) for k, v in sorted(self.by_kind.items())}
        return QuantReport(
            method=method,
            layers_quantized=sum(v[0] for v in kinds.values()),
            layers_total=sum(v[1] for v in kinds.values()),
            by_kind=kinds,
            weight_bytes_before=self.before,
            weight_bytes_after=self.after,
            counted_from=counted_from,
        )


def is_depthwise(weight_shape: tuple[int, ...], groups: int) -> bool:
    """A grouped conv with one input channel per group (weight ``[out, in / groups, k...]``)."""
    return len(weight_shape) > 2 and groups > 1 and weight_shape[1] == 1


def _conv_kind(weight_shape: tuple[int, ...], groups: int) -> str:
    if len(weight_shape) == 2:
        return "linear"
    dims = len(weight_shape) - 2
    if is_depthwise(weight_shape, groups):
        return f"conv{dims}d-depthwise"
    return f"conv{dims}d"


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


# ---------------------------------------------------------------- pt2e / torch.export graphs (ExecuTorch)

_DEQUANT_OPS = ("dequantize_per_channel", "dequantize_per_tensor")


def count_pt2e_graph(graph_module: Any, *, method: str) -> QuantReport:
    """Count conv/linear nodes of a converted pt2e ``GraphModule`` whose weight is stored as INT8.

    A weight counts as quantized when it reaches the layer through a ``dequantize_*`` node whose input
    is an int8 constant; its stored bytes are that constant plus its scale/zero-point constants.
    """
    import torch

    tally = _Tally()

    def const(node: Any) -> torch.Tensor | None:
        if getattr(node, "op", None) != "get_attr":
            return None
        obj: Any = graph_module
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        return obj if isinstance(obj, torch.Tensor) else None

    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if not (name.startswith("aten.conv") or name.startswith("aten.linear")):
            continue
        weight_node = node.args[1]
        quantized = False
        tensor = const(weight_node)
        stored = _nbytes(tensor) if tensor is not None else 0
        if tensor is None and getattr(weight_node, "op", None) == "call_function" and any(
            op in str(weight_node.target) for op in _DEQUANT_OPS
        ):
            tensor = const(weight_node.args[0])
            if tensor is not None:
                quantized = tensor.dtype in (torch.int8, torch.uint8)
                stored = _nbytes(tensor) + sum(
                    _nbytes(t) for t in (const(a) for a in weight_node.args[1:3]) if t is not None
                )
        if tensor is None:
            continue  # a weight computed at run time is not a stored layer weight
        groups = int(node.args[6]) if name.startswith("aten.conv") and len(node.args) > 6 else 1
        tally.add(_conv_kind(tuple(tensor.shape), groups), quantized=quantized, numel=tensor.numel(),
                  stored_bytes=stored)
    return tally.report(method=method, counted_from="the converted pt2e graph lowered into the .pte")


# ---------------------------------------------------------------- TorchScript

def count_torchscript(module: Any, *, method: str) -> QuantReport:
    """Count the weight-bearing submodules of a loaded TorchScript module by their stored weight dtype."""
    import torch

    tally = _Tally()
    for _, sub in module.named_modules():
        type_name = sub._c._type().qualified_name()
        if ".quantized." in type_name and type_name.rsplit(".", 1)[-1] in ("Linear", "Conv1d", "Conv2d", "Conv3d"):
            weight, _bias = sub._packed_params._weight_bias() if hasattr(sub, "_packed_params") else (
                sub.weight(), None)
            qbytes = weight.int_repr().numel()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                qbytes += _nbytes(weight.q_per_channel_scales()) + _nbytes(weight.q_per_channel_zero_points())
            else:
                qbytes += 16  # one float64 scale + one int64 zero point
            tally.add(_conv_kind(tuple(weight.shape), 1), quantized=True, numel=weight.numel(), stored_bytes=qbytes)
            continue
        weight = getattr(sub, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            groups = weight.shape[0] if weight.dim() > 2 and weight.shape[1] == 1 else 1
            tally.add(_conv_kind(tuple(weight.shape), groups), quantized=False, numel=weight.numel(),
                      stored_bytes=_nbytes(weight))
    return tally.report(method=method, counted_from="the TorchScript file's modules, loaded back")


# ---------------------------------------------------------------- ONNX

_ONNX_FLOAT_LAYERS = ("Conv", "Gemm", "MatMul")
_ONNX_INTEGER_LAYERS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")


def count_onnx(model: Any, *, method: str) -> QuantReport:
    """Count Conv/Gemm/MatMul layers of an ONNX ``ModelProto`` whose weight initializer is INT8.

    Float layers are quantized in QDQ form when their weight input is a ``DequantizeLinear`` of an
    int8 initializer; dynamic quantization replaces them with ``ConvInteger``/``MatMulInteger``.
    """
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    tally = _Tally()

    def init_bytes(name: str) -> int:
        return int(inits[name].nbytes) if name in inits else 0

    for node in model.graph.node:
        op = node.op_type
        if op not in _ONNX_FLOAT_LAYERS and op not in _ONNX_INTEGER_LAYERS:
            continue
        weight_index = 3 if op in ("QLinearConv", "QLinearMatMul") else 1
        if len(node.input) <= weight_index:
            continue
        w_name = node.input[weight_index]
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if op in _ONNX_INTEGER_LAYERS:
            if w_name not in inits:
                continue
            w = inits[w_name]
            stored = int(w.nbytes)
            if op == "ConvInteger" or op == "MatMulInteger":
                stored += init_bytes(node.input[3]) if len(node.input) > 3 else 0
                base = w_name[: -len("_quantized")] if w_name.endswith("_quantized") else w_name
                stored += init_bytes(f"{base}_scale")
            else:
                stored += init_bytes(node.input[4]) + init_bytes(node.input[5])
            kind = _conv_kind(tuple(w.shape), groups) if "Conv" in op else "linear"
            tally.add(kind, quantized=True, numel=int(w.size), stored_bytes=stored)
            continue
        if w_name in inits:
            w = inits[w_name]
            kind = _conv_kind(tuple(w.shape), groups) if op == "Conv" else "linear"
            tally.add(kind, quantized=False, numel=int(w.size), stored_bytes=int(w.nbytes))
            continue
        producer = producers.get(w_name)
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in inits:
            w = inits[producer.input[0]]
            stored = int(w.nbytes) + sum(init_bytes(n) for n in producer.input[1:3])
            kind = _conv_kind(tuple(w.shape), groups) if op == "Conv" else "linear"
            tally.add(kind, quantized=w.dtype.itemsize == 1, numel=int(w.size), stored_bytes=stored)
    return tally.report(method=method, counted_from="the ONNX graph in the file")


def with_size_ratio(report: QuantReport, *, size_bytes: int, fp32_size_bytes: int | None) -> QuantReport:
    """The report with ``size_ratio_to_fp32`` filled in (``None`` when the FP32 twin was not exported)."""
    from dataclasses import replace

    ratio = None if not fp32_size_bytes else round(size_bytes / fp32_size_bytes, 4)
    return replace(report, size_ratio_to_fp32=ratio)
