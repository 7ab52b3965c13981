"""Static INT8 calibration for the XNNPACK pt2e path: observer choice, layer groups, quantize-and-convert.

``XNNPACKQuantizer`` with per-channel symmetric INT8 weights is what ExecuTorch lowers to XNNPACK; what
changes the model's answers is how the *activation* ranges are chosen from the calibration images:

``minmax``, ``moving_average``, ``histogram`` (the quantizer's own default) or ``percentile``, defined in
``training.quant_observers`` (QAT initialises its ranges with them too); the export's default, ``auto``,
tries them all (``export.sensitivity.choose_observer``).

``layer_groups`` names the units that mixed precision and the sensitivity analysis switch between
INT8 and FP32 (for timm's EfficientNet: the stem, each block ``blocks.i.j``, the head conv, the
classifier). ``calibrate`` runs prepare_pt2e on the whole model (batch axis dynamic, so calibration and
evaluation run batched) and feeds it the calibration images once; ``convert`` turns a copy into the
converted graph that ``export.executorch_export`` lowers, after removing the observers of the groups
kept in FP32, so XNNPACK runs those in floating point. One calibration thus serves the static artifact,
the sensitivity analysis and the mixed-precision search.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from export.errors import ExportConfigError
from export.quant_report import is_depthwise
from training import quant_observers

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The observers themselves live in training (QAT initialises its ranges with them too).
OBSERVERS = quant_observers.OBSERVERS
DEFAULT_OBSERVER = "histogram"
PERCENTILE = quant_observers.PERCENTILE
percentile_observer_class = quant_observers.percentile_observer_class


def check_observer(observer: str) -> str:
    if observer not in OBSERVERS:
        raise ExportConfigError(f"unknown calibration observer {observer!r}", hint=f"choose from {', '.join(OBSERVERS)}")
    return observer


def activation_observer(observer: str):
    """The observer constructor for activations named ``observer`` (one of ``OBSERVERS``)."""
    return quant_observers.activation_observer(check_observer(observer))


def quantization_config(observer: str = DEFAULT_OBSERVER, *, qat: bool = False):
    """XNNPACK's symmetric per-channel config, static activations observed by ``observer``.

    With ``qat`` the quantizer's own QAT config (fake quantization with moving-average ranges) is
    returned unchanged: the ranges are then learned during training, not calibrated.
    """
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    base = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    if qat:
        return base
    act = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=activation_observer(observer))
    return dataclasses.replace(base, input_activation=act, output_activation=act)


def dynamic_config():
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    return get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)


SCHEMES = ("static", "hybrid")


def is_depthwise_conv(node: Any) -> bool:
    """A 2-D convolution node with one input channel per group (depthwise), from its weight's shape."""
    import torch

    if node.op != "call_function" or node.target not in (torch.ops.aten.conv2d.default,
                                                          torch.ops.aten.convolution.default):
        return False
    weight = node.args[1].meta.get("val") if len(node.args) > 1 and hasattr(node.args[1], "meta") else None
    if weight is None or weight.dim() != 4:
        return False
    index = 6 if node.target == torch.ops.aten.conv2d.default else 8
    groups = node.args[index] if len(node.args) > index else 1
    return is_depthwise(tuple(weight.shape), int(groups))


def hybrid_quantizer(observer: str = DEFAULT_OBSERVER):
    """XNNPACK's dynamic INT8 for Linear and non-depthwise Conv2d, static INT8 (``observer``) for depthwise convs.

    XNNPACK has no dynamically quantized depthwise convolution, so its dynamic config leaves those FP32
    (66 of EfficientNet-B0's 82 weight layers INT8). Here they get static per-channel INT8 weights and
    calibrated activation ranges; everything else keeps ranges computed at run time, per image.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    def depthwise_only(node: Any) -> bool:  # parameters are judged by the conv that reads them
        return node.op in ("get_attr", "placeholder") or is_depthwise_conv(node)

    static = XNNPACKQuantizer().set_global(quantization_config(observer))
    static.set_filter_function(depthwise_only)
    return ComposableQuantizer([static, XNNPACKQuantizer().set_global(dynamic_config())])


# ------------------------------------------------------------------------------------------ layer groups


def layer_groups(model: torch.nn.Module) -> list[str]:
    """The model's quantization units in execution order, as module names.

    Each top-level child that holds weights is a group, except containers of containers (timm's
    ``blocks`` = stages of blocks), which are split down to their blocks: ``blocks.0.0``, ``blocks.1.0``...
    Batch norms and activations (``bn1``, ``bn2``, ``global_pool``) are folded into or act on their
    neighbours and are not groups of their own.
    """
    from torch import nn

    def has_weights(module: nn.Module) -> bool:
        return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in module.modules())

    groups: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        children = [(n, c) for n, c in module.named_children() if has_weights(c)]
        container = not prefix or isinstance(module, (nn.Sequential, nn.ModuleList))
        if not container or not children:
            groups.append(prefix)
            return
        for name, child in children:
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return groups


def group_layers(model: torch.nn.Module, groups: Sequence[str]) -> dict[str, list[str]]:
    """The weight layers (conv, linear module names) of each group."""
    from torch import nn

    out: dict[str, list[str]] = {g: [] for g in groups}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            for group in groups:
                if name == group or name.startswith(group + "."):
                    out[group].append(name)
                    break
    return out


def group_weight_bytes(model: torch.nn.Module, groups: Sequence[str]) -> dict[str, int]:
    """FP32 bytes of the conv/linear weights of each group (what keeping it FP32 costs, roughly x4/3 of INT8)."""
    modules = dict(model.named_modules())
    return {g: sum(int(modules[name].weight.numel()) * 4 for name in names)
            for g, names in group_layers(model, groups).items()}


def _node_in_groups(groups: Iterable[str]):
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    filters = [get_module_name_filter(g) for g in groups]

    def matches(node) -> bool:
        return any(f(node) for f in filters)

    return matches


# ------------------------------------------------------------------------------------------ quantize


CALIBRATION_BATCH = 32


def make_quantizer(*, observer: str = DEFAULT_OBSERVER, qat: bool = False):
    """An ``XNNPACKQuantizer`` for static INT8 (or QAT) with per-channel weights and ``observer`` activations."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    return XNNPACKQuantizer().set_global(quantization_config(observer, qat=qat))


def export_batch_dynamic(model: torch.nn.Module, example: torch.Tensor) -> Any:
    """``torch.export`` the model with a dynamic batch axis (calibration and evaluation run batched)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    return program.module()


def calibrate(model: torch.nn.Module, images: Any, *, observer: str = DEFAULT_OBSERVER,
              batch_size: int = CALIBRATION_BATCH, scheme: str = "static") -> Any:
    """prepare_pt2e on the whole model and run ``images`` through its observers, ``batch_size`` at a time.

    ``scheme`` ``static`` quantizes every activation with calibrated ranges (``make_quantizer``);
    ``hybrid`` only the depthwise convs' (``hybrid_quantizer``), the rest dynamically.

    Every weight layer and activation gets an observer; which of them become INT8 is decided at
    ``convert`` time, so one calibration serves the sensitivity analysis, the mixed-precision search
    and the final artifact. Observers pass values through unchanged, so each sees FP32 activations
    whichever groups end up quantized. (``moving_average`` and ``percentile`` average per batch.)

    Args:
        images: float32 NCHW array or tensor of calibration images.

    Returns:
        The prepared, calibrated ``GraphModule`` (keep it; ``convert`` copies it).
    """
    x = _as_batch(images)
    prepared = _prepare(model, x, observer, scheme)
    _feed(prepared, x, batch_size)
    return prepared


def calibrate_each(model: torch.nn.Module, images: Any, observers: Sequence[str], *,
                   batch_size: int = CALIBRATION_BATCH, scheme: str = "static") -> Iterator[tuple[str, Any]]:
    """``(observer, calibrate(model, images, observer=observer, ...))`` for each of ``observers``, lazily.

    One ``torch.export`` and one ``prepare_pt2e`` serve them all (on B0 they are ~6 s of each
    calibration): the observers differ only in the class of the activation observers, so each
    observer's graph is a copy of the one prepared graph with those modules replaced by fresh ones of
    its kind, built from the same quantization spec as ``prepare_pt2e`` would build them. Sharing
    between edges is kept (one module, one replacement); weight observers and the run-time (dynamic)
    activations' placeholders are not touched.
    """
    import dataclasses

    observers = [check_observer(o) for o in observers]
    if not observers:
        return
    x = _as_batch(images)
    template = _prepare(model, x, observers[0], scheme)
    first_class = _observer_class(observers[0])
    activation_qscheme = quantization_config(observers[0]).input_activation.qscheme  # per-tensor affine; the
    # weights' observers are per-channel symmetric, so a weight observer of the same class is never swapped
    for i, observer in enumerate(observers):
        prepared = template if i == len(observers) - 1 else copy_prepared(template)
        if observer != observers[0]:
            spec = quantization_config(observer).input_activation
            kwargs = {k: v for k, v in dataclasses.asdict(spec).items()
                      if k not in ("observer_or_fake_quant_ctr", "ch_axis")}
            make = spec.observer_or_fake_quant_ctr.with_args(**kwargs)
            fresh: dict[int, Any] = {}  # one replacement per module, under every name it is registered by
            for name, module in list(prepared.named_modules(remove_duplicate=False)):
                if type(module) is first_class and getattr(module, "qscheme", None) == activation_qscheme:
                    parent, _, attr = name.rpartition(".")
                    replacement = fresh.setdefault(id(module), make())
                    setattr(prepared.get_submodule(parent) if parent else prepared, attr, replacement)
        _feed(prepared, x, batch_size)
        yield observer, prepared


def _observer_class(observer: str) -> type:
    ctr = activation_observer(observer)
    return ctr.p.func if hasattr(ctr, "p") else ctr


def _as_batch(images: Any) -> torch.Tensor:
    import numpy as np
    import torch

    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.shape[0] == 0:
        raise ExportConfigError("no calibration images to calibrate static INT8 with")
    return x


def _prepare(model: torch.nn.Module, x: torch.Tensor, observer: str, scheme: str) -> Any:
    """The model exported (batch axis dynamic) and prepare_pt2e'd for ``scheme``, its observers empty."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if scheme not in SCHEMES:
        raise ValueError(f"unknown calibration scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    graph = export_batch_dynamic(model, x[:1].expand(2, *x.shape[1:]))  # batch 1 would be specialised
    if scheme == "static":
        quantizer = make_quantizer(observer=observer)
    else:
        quantizer = hybrid_quantizer(check_observer(observer))
    return prepare_pt2e(graph, quantizer)


def _feed(prepared: Any, x: torch.Tensor, batch_size: int) -> None:
    import torch

    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            prepared(x[start:start + batch_size])


def _is_observer(prepared: Any, node: Any) -> bool:
    from torchao.quantization.pt2e import ObserverBase

    return node.op == "call_module" and isinstance(prepared.get_submodule(str(node.target)), ObserverBase)


def copy_prepared(prepared: Any) -> Any:
    """A deep copy of a prepared graph whose quantization annotations point at the copy's own nodes.

    ``copy.deepcopy`` copies the annotations' ``input_qspec_map`` keys (nodes) as detached nodes, and
    convert_pt2e's metadata pass then looks for a dynamic input's ``choose_qparams`` among the users of a
    node that is not in the graph ("No chose qparams node found"); static-only graphs never ask.
    """
    import dataclasses

    model = copy.deepcopy(prepared)
    by_name = {node.name: node for node in model.graph.nodes}
    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None or not getattr(annotation, "input_qspec_map", None):
            continue
        remapped = {by_name.get(getattr(key, "name", None), key): spec for key, spec in annotation.input_qspec_map.items()}
        node.meta["quantization_annotation"] = dataclasses.replace(annotation, input_qspec_map=remapped)
    return model


def convert(prepared: Any, *, fp32_groups: Sequence[str] = (), only_groups: Sequence[str] | None = None) -> Any:
    """convert_pt2e a copy of a calibrated model, with the observers of FP32 layer groups removed first.

    An observer stays (and becomes a quantize/dequantize pair) when the node it observes or any node
    reading it belongs to a quantized group; so a group kept in FP32 has FP32 weights and computes in
    FP32, and the edges into and out of INT8 groups stay quantized. ``only_groups`` quantizes just those
    groups (the sensitivity analysis); ``fp32_groups`` everything but those (mixed precision).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    if fp32_groups and only_groups is not None:
        raise ValueError("give fp32_groups or only_groups, not both")
    model = copy_prepared(prepared)
    if fp32_groups or only_groups is not None:
        in_fp32 = _node_in_groups(fp32_groups)
        in_only = _node_in_groups(only_groups or ())

        def quantized(node: Any) -> bool:
            if getattr(node, "op", None) not in ("call_function", "call_module"):
                return False  # placeholders, weights: decided by the layer that reads them
            return in_only(node) if only_groups is not None else not in_fp32(node)

        graph = model.graph
        for node in list(graph.nodes):
            if not _is_observer(model, node):
                continue
            source = node.args[0]
            if quantized(source) or any(quantized(user) for user in node.users):
                continue
            node.replace_all_uses_with(source)
            graph.erase_node(node)
        graph.lint()
        model.recompile()
    return convert_pt2e(model)


def quantize_static(model: torch.nn.Module, images: Any, *, observer: str = DEFAULT_OBSERVER,
                    fp32_groups: Sequence[str] = ()) -> Any:
    """``calibrate`` then ``convert``: the converted graph (batch axis dynamic) for static INT8."""
    return convert(calibrate(model, images, observer=observer), fp32_groups=fp32_groups)


def run_graph(graph_module: Any, images: Any, batch_size: int = 64) -> Any:
    """Logits (numpy) of a (converted) graph module on float32 NCHW ``images``, ``batch_size`` at a time.

    A graph exported with a fixed batch gets its last chunk padded (and the padding dropped).
    """
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size]
            n = chunk.shape[0]
            if n < batch_size:
                chunk = torch.cat([chunk, chunk[:1].expand(batch_size - n, *chunk.shape[1:])])
            outs.append(graph_module(chunk)[:n])
    return torch.cat(outs).numpy()
