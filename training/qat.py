"""Quantization-aware training: PT2E QAT with XNNPACK's quantizer, distilled from the FP32 model.

``emobench train qat --init-from RUN`` fine-tunes a finished FP32 run with fake quantization, so the
weights learn to live with INT8 rounding. The recipe (PyTorch's PT2E QAT, as ExecuTorch documents it):

1. ``torch.export`` the FP32 model (batch axis dynamic) and ``prepare_qat_pt2e`` it with
   ``XNNPACKQuantizer``'s QAT config: per-channel symmetric INT8 weights, static INT8 activations,
   each quantized tensor behind a ``FusedMovingAvgObsFakeQuantize`` (batch norms are folded into their
   convolutions in the simulated graph, as they will be on the device);
2. initialise the activation ranges from a calibration (``init_observer``, default ``auto``): the QAT
   config's own moving-average min/max ranges would cover the rare images whose late activations are
   30-80x the usual ones and start QAT from a collapsed model (22% agreement seen on a demo model);
   ``QatModel.init_ranges`` calibrates with each observer of ``training.quant_observers`` on
   ``init_images`` training images, keeps the one whose fake-quantized graph agrees best with the
   FP32 model, and fixes those ranges (the weights' per-channel ranges keep following the weights);
3. train the prepared graph (``QatModel`` below) with the Phase 2 loop: its config, seeded loaders,
   gradient clipping, AdamW and the schedule, checkpoints and ``--resume``, preemption, TensorBoard;
4. after ``freeze_bn_after`` epochs the batch-norm statistics stop moving (the graph runs in eval
   mode), after ``freeze_observers_after`` the quantization ranges are fixed, so the last epochs fit
   the weights to the final INT8 grid;
5. export: ``convert_pt2e`` turns the fake quantization into real quantize/dequantize pairs that the
   XNNPACK lowering fuses into INT8 kernels (``export``'s ``int8-qat`` artifact).

The loss is distillation from the FP32 model the run starts from (the teacher, frozen, in eval mode):
``distill_weight`` x KL(student || teacher) at ``temperature`` (x T^2, Hinton et al.) plus
``1 - distill_weight`` x the usual cross-entropy on the labels. With ``distill_weight = 1`` (the
default) QAT learns the FP32 model's answers, not the labels: the goal of INT8 is to change nothing,
and the measure of success is top-1 agreement with FP32, which the validation reports per epoch
(``val_agreement``, the default ``monitor`` of the QAT phase).

The QAT checkpoint (``checkpoint.pt`` of a ``qat`` run) holds the prepared graph's state as
``model_state`` (fake-quantize ranges included), the teacher's FP32 weights as ``fp32_model_state`` and
how it was made under ``qat``; ``Checkpoint.build_model()`` of it returns the FP32 teacher, so every
reader that wants "the model" (evaluate, export's FP32 artifacts and verification) gets the reference
the INT8 artifact must agree with, and ``build_qat_model`` returns the trained QAT graph.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

QUANTIZER = ("XNNPACKQuantizer QAT config (pt2e): per-channel symmetric INT8 weights, static INT8 activations, "
             "FusedMovingAvgObsFakeQuantize")
_MAX_BATCH = 4096


class QatError(EmobenchError):
    """A QAT run or checkpoint that cannot be built as asked."""


@dataclass(frozen=True)
class QatSettings:
    """The ``qat`` section of a training config: how ``emobench train qat`` fine-tunes.

    Attributes:
        epochs: QAT epochs (replace the config's ``epochs`` in the QAT phase).
        lr: peak learning rate (replaces ``lr``): QAT nudges trained weights, so 10-100x below Phase 2's.
        distill_weight: share of the loss that is distillation from the FP32 model; the rest is
            cross-entropy on the labels (with the config's label smoothing).
        temperature: softmax temperature of the distillation.
        freeze_bn_after: epochs after which batch-norm statistics freeze (None: never).
        freeze_observers_after: epochs after which the quantization ranges freeze (None: never).
        init_observer: how the activation ranges start: ``auto`` (every observer of
            ``training.quant_observers`` tried, the best kept), one of those observers, or ``none``
            (the QAT config's moving averages, learned during training). Calibrated ranges stay fixed.
        init_images: training images (eval transform, evenly spread) the ranges are calibrated on.
    """

    epochs: int = 4
    lr: float = 0.0001
    distill_weight: float = 1.0
    temperature: float = 2.0
    freeze_bn_after: int | None = 0
    freeze_observers_after: int | None = 3
    init_observer: str = "auto"
    init_images: int = 128

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise QatError(f"qat.epochs must be positive, got {self.epochs}")
        if not self.lr > 0:
            raise QatError(f"qat.lr must be > 0, got {self.lr}")
        if not 0 <= self.distill_weight <= 1:
            raise QatError(f"qat.distill_weight must lie in [0, 1], got {self.distill_weight}")
        if not self.temperature > 0:
            raise QatError(f"qat.temperature must be > 0, got {self.temperature}")
        from training.quant_observers import OBSERVERS

        if self.init_observer not in ("auto", "none", *OBSERVERS):
            raise QatError(f"qat.init_observer must be auto, none or one of {', '.join(OBSERVERS)}, "
                           f"got {self.init_observer!r}")
        if self.init_images < 1:
            raise QatError(f"qat.init_images must be at least 1, got {self.init_images}")
        for name in ("freeze_bn_after", "freeze_observers_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QatError(f"qat.{name} must be >= 0 or null, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "distill_weight": self.distill_weight,
                "temperature": self.temperature, "freeze_bn_after": self.freeze_bn_after,
                "freeze_observers_after": self.freeze_observers_after, "init_observer": self.init_observer,
                "init_images": self.init_images}


def qat_quantizer() -> Any:
    """``XNNPACKQuantizer`` with its QAT config: what ExecuTorch lowers to XNNPACK's INT8 kernels."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


class QatModel(nn.Module):
    """A ``prepare_qat_pt2e`` graph that ``train()`` / ``eval()`` like any module.

    An exported graph ignores ``module.train()``: batch norm and dropout are switched by rewriting the
    graph (``move_exported_model_to_train`` / ``_eval``). ``freeze_bn`` keeps the graph in eval mode
    for good (running statistics, no dropout) while the weights keep training; ``freeze_observers``
    fixes every quantization range.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self.bn_frozen = False
        self.observers_frozen = False
        self._graph_training: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        # A checkpoint's state is a plain dict without the module versions (``_metadata``); torchao's
        # observers take a missing version for version 1 and reset their eps to float32's (1.2e-7, not
        # XNNPACK's 2**-12), which changes the scales of tiny ranges. Lend them this graph's versions.
        if getattr(state_dict, "_metadata", None) is None:
            with_versions: Any = collections.OrderedDict(state_dict)
            with_versions._metadata = getattr(self.state_dict(), "_metadata", None)
            state_dict = with_versions
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> QatModel:
        # not nn.Module.train: an exported graph refuses .train()/.eval() (its fake-quantize modules
        # follow their own enable flags, not ``training``), so only the graph is rewritten
        self.training = mode
        self._set_graph_mode(mode and not self.bn_frozen)
        return self

    def _set_graph_mode(self, training: bool) -> None:
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        if self._graph_training is training:
            return
        if training:
            move_exported_model_to_train(self.graph)
        else:
            move_exported_model_to_eval(self.graph)
        self._graph_training = training

    def freeze_bn(self) -> None:
        """Batch-norm statistics stop moving (and dropout stops) from now on."""
        self.bn_frozen = True
        self._set_graph_mode(False)

    def freeze_observers(self) -> None:
        """Every fake-quantize module keeps its current range from now on."""
        from torchao.quantization.pt2e.fake_quantize import disable_observer

        self.graph.apply(disable_observer)
        self.observers_frozen = True

    def apply_schedule(self, settings: QatSettings, epoch: int) -> None:
        """Freeze batch norm and observers when ``epoch`` (0-based, about to start) reaches their point."""
        if settings.freeze_bn_after is not None and epoch >= settings.freeze_bn_after and not self.bn_frozen:
            log.info("QAT epoch %d: batch-norm statistics frozen", epoch + 1)
            self.freeze_bn()
        if (settings.freeze_observers_after is not None and epoch >= settings.freeze_observers_after
                and not self.observers_frozen):
            log.info("QAT epoch %d: quantization ranges frozen", epoch + 1)
            self.freeze_observers()

    def _fake_quantizers(self) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
        """(every fake-quantize module, the per-tensor activation ones), by attribute name in the graph."""
        from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

        every = {n: m for n, m in self.graph.named_children() if isinstance(m, FakeQuantizeBase)}
        per_tensor = (torch.per_tensor_affine, torch.per_tensor_symmetric)
        return every, {n: m for n, m in every.items() if getattr(m, "qscheme", None) in per_tensor}

    def init_ranges(self, teacher: nn.Module, images: torch.Tensor, observers: tuple[str, ...],
                    batch_size: int = 32) -> dict[str, Any]:
        """Calibrate the activation ranges with each of ``observers``, keep the best, and fix them.

        For each observer, as static INT8 calibration does: every fake quantizer is bypassed (FP32 flows
        through the graph, in eval mode), each activation's observer sees the ``images``; the ranges
        are then loaded into the fake quantizers and the fake-quantized graph's top-1 agreement with
        ``teacher`` on the same images is measured (ties: the lower mean |logit difference|). The
        winner's ranges stay, with the activations' observers disabled; the weights' observers keep
        following the weights. Call it on a freshly prepared graph, before training; the measuring pass
        sizes the weights' ranges.

        Returns:
            What to record: the observer chosen, how it was chosen, and every trial.
        """
        import time

        from torchao.quantization.pt2e.fake_quantize import disable_observer

        from training.quant_observers import activation_observer

        every, acts = self._fake_quantizers()
        if not acts:
            raise QatError("init_ranges: the QAT graph has no activation fake quantizers")
        was_training = self._graph_training
        self._set_graph_mode(False)
        for module in acts.values():  # a measuring pass must not move the ranges it measures
            module.apply(disable_observer)
        teacher_logits = _batched(teacher, images, batch_size)
        trials: list[dict[str, Any]] = []
        best: tuple[tuple[float, float], str, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None
        for observer in observers:
            started = time.perf_counter()
            ctor = activation_observer(observer)
            watchers = {n: ctor(dtype=m.activation_post_process.dtype, qscheme=m.activation_post_process.qscheme,
                                quant_min=m.quant_min, quant_max=m.quant_max) for n, m in acts.items()}
            for name in every:
                setattr(self.graph, name, _Bypass(watchers.get(name)))
            try:
                _batched(self.graph, images, batch_size)
            finally:
                for name, module in every.items():
                    setattr(self.graph, name, module)
            qparams = {n: tuple(t.detach().clone() for t in w.calculate_qparams()) for n, w in watchers.items()}
            self._load_ranges(acts, qparams)
            logits = _batched(self.graph, images, batch_size)
            top1 = agreement(logits.argmax(1).tolist(), teacher_logits.argmax(1).tolist())
            mad = float((logits - teacher_logits).abs().mean())
            trials.append({"observer": observer, "top1_agreement": top1, "mean_abs_diff": mad,
                           "seconds": round(time.perf_counter() - started, 2)})
            log.info("QAT range init %s: agreement %.3f with FP32 on %d images", observer, top1, len(images))
            key = (-top1, mad)
            if best is None or key < best[0]:
                best = (key, observer, qparams)
        assert best is not None
        self._load_ranges(acts, best[2])
        if was_training is not None:
            self._set_graph_mode(was_training)
        trials.sort(key=lambda t: (-t["top1_agreement"], t["mean_abs_diff"]))
        return {"observer": best[1], "images": len(images),
                "chosen_by": "highest top-1 agreement of the fake-quantized graph with FP32 on the images",
                "trials": trials}

    @staticmethod
    def _load_ranges(acts: Mapping[str, nn.Module], qparams: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set each fake quantizer's scale/zero point, and its observer's min/max to the range they encode
        (``convert_pt2e`` reads the observer's ``calculate_qparams``, the fake quantizer its buffers)."""
        for name, module in acts.items():
            scale, zero_point = qparams[name]
            m: Any = module
            m.scale.resize_(scale.shape).copy_(scale)
            m.zero_point.resize_(zero_point.shape).copy_(zero_point)
            observer = m.activation_post_process
            observer.min_val.copy_(((m.quant_min - zero_point) * scale).reshape(observer.min_val.shape))
            observer.max_val.copy_(((m.quant_max - zero_point) * scale).reshape(observer.max_val.shape))

    def converted(self) -> Any:
        """A copy with the fake quantization turned into quantize/dequantize pairs (``convert_pt2e``).

        This is the graph ``export`` lowers to XNNPACK; its batch axis stays dynamic.
        """
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        graph = copy.deepcopy(self.graph)
        move_exported_model_to_eval(graph)
        with conv_bn_rewrites_for(graph.graph):
            converted = convert_pt2e(graph)
        drop_batch_counter_updates(converted)
        return converted


def drop_batch_counter_updates(graph_module: Any) -> int:
    """Erase the ``num_batches_tracked += 1`` of every batch norm from a converted QAT graph; returns how many.

    The QAT graph is exported in train mode, which records that update. ``convert_pt2e`` removes it
    only for ``torch.nn.BatchNorm2d`` itself, not for subclasses such as timm's ``BatchNormAct2d``, so
    the ``int8-qat`` program would otherwise bump one counter per batch norm, outside the XNNPACK
    delegate, on every inference (ExecuTorch warns of a buffer mutation). Nothing reads the counters
    once the batch norms are folded.
    """
    dropped = 0
    for node in list(graph_module.graph.nodes):
        source: Any = node.args[0] if node.op == "call_function" and node.args else None
        if (node.target == torch.ops.aten.add_.Tensor and not node.users and getattr(source, "op", None) == "get_attr"
                and str(source.target).endswith("num_batches_tracked")):
            graph_module.graph.erase_node(node)
            dropped += 1
    if dropped:
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return dropped


def _batched(module: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``module``'s outputs for ``images``, ``batch_size`` at a time, without gradients."""
    with torch.no_grad():
        return torch.cat([module(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


class _Bypass(nn.Module):
    """Stands in for a fake quantizer during range calibration: FP32 passes through, ``observer`` watches."""

    def __init__(self, observer: nn.Module | None) -> None:
        super().__init__()
        self.observer = observer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer(x.detach())
        return x


def prepare_qat(model: nn.Module, input_shape: tuple[int, int, int]) -> QatModel:
    """``torch.export`` ``model`` (batch axis dynamic) and ``prepare_qat_pt2e`` it for XNNPACK.

    The model is exported in train mode (QAT's batch norms then start training); ``QatModel.eval()``
    switches it. Only shapes matter for the export, so the example batch is zeros.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    example = torch.zeros(2, *input_shape)  # batch 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    was_training = model.training
    model.train()
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    finally:
        model.train(was_training)
    with conv_bn_rewrites_for(program.graph):
        prepared = prepare_qat_pt2e(program.module(), qat_quantizer())
    return QatModel(prepared)


_CONV_KINDS = ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
_GENERIC_CONVS = frozenset({"convolution", "_convolution"})
_REWRITE_HELPERS = ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper")
_REWRITE_LOCK = threading.RLock()


def op_names(graph: Any) -> set[str]:
    """The aten op names (``conv2d``, ``batch_norm``, ``add_``...) that ``graph``'s call_function nodes run."""
    return {str(getattr(getattr(node.target, "overloadpacket", None), "__name__", ""))
            for node in graph.nodes if node.op == "call_function"}


def conv_kinds_in(graph: Any) -> frozenset[str]:
    """The conv kinds (``_CONV_KINDS``) that torchao's conv-bn QAT rewrites could match in ``graph``.

    All four when the graph holds a generic ``aten.convolution``, which any of them may be.
    """
    ops = op_names(graph)
    return frozenset(_CONV_KINDS) if ops & _GENERIC_CONVS else frozenset(ops & set(_CONV_KINDS))


@contextlib.contextmanager
def conv_bn_rewrites_for(graph: Any) -> Iterator[list[str]]:
    """Run torchao's conv-bn QAT rewrites only for the conv kinds ``graph`` has.

    ``prepare_qat_pt2e`` (fuse) and ``convert_pt2e`` (fold) rewrite conv + batch norm for conv1d,
    conv2d, conv_transpose1d and conv_transpose2d in turn, whatever the model holds, and each rewrite
    first ``torch.export``s its pattern graphs: 96 small exports in convert (about 0.15-0.3 s each;
    twice as many on a machine with CUDA). A rewrite for a conv kind with no node in the graph matches
    nothing, so it is skipped. For a 2-D CNN this cuts ``convert`` of test_efficientnet's QAT graph from
    14.5 s to 3.5 s with the same converted code and outputs. Yields the skipped kinds, for logs and tests.
    """
    from torchao.quantization.pt2e import qat_utils

    present = conv_kinds_in(graph)
    skipped: list[str] = []

    def only_present(helper: Callable[..., Any]) -> Callable[..., Any]:
        def run(m: Any, conv_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            if getattr(conv_fn, "__name__", None) in _CONV_KINDS and conv_fn.__name__ not in present:
                skipped.append(conv_fn.__name__)
                return m
            return helper(m, conv_fn, *args, **kwargs)
        return run

    with _REWRITE_LOCK:
        originals = {name: getattr(qat_utils, name) for name in _REWRITE_HELPERS if hasattr(qat_utils, name)}
        for name, helper in originals.items():
            setattr(qat_utils, name, only_present(helper))
        try:
            yield skipped
        finally:
            for name, helper in originals.items():
                setattr(qat_utils, name, helper)


def build_qat_model(fp32_model: nn.Module, input_shape: tuple[int, int, int],
                    state: Mapping[str, torch.Tensor] | None = None, *, source: str = "checkpoint") -> QatModel:
    """The QAT graph of ``fp32_model``'s architecture, ready for a saved ``QatModel`` state.

    The per-channel ranges of a fresh graph have no shape until they first observe data, so one eval
    pass over zeros sizes them; the saved ``state`` (loaded when given) then overwrites every buffer.
    """
    qat = prepare_qat(copy.deepcopy(fp32_model), input_shape)
    qat.eval()
    with torch.no_grad():
        qat(torch.zeros(2, *input_shape))
    if state is not None:
        try:
            qat.load_state_dict(dict(state))
        except RuntimeError as exc:
            raise QatError(f"{source}: the stored QAT state does not fit this model ({str(exc).splitlines()[0]})",
                           hint="it was written by another emobench or torchao version; re-run `emobench train qat`"
                           ) from exc
    return qat


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      label_loss: Callable[[], torch.Tensor], settings: QatSettings) -> torch.Tensor:
    """``w`` x T^2 x KL(softmax(teacher / T) || softmax(student / T)) + ``(1 - w)`` x ``label_loss()``.

    The teacher saw the same (mixed) batch, so the distillation term is computed once; ``label_loss``
    (the labels' loss, mixup applied) is only evaluated when ``w < 1``.
    """
    t = settings.temperature
    w = settings.distill_weight
    student = nn.functional.log_softmax(student_logits.float() / t, dim=1)
    teacher = nn.functional.log_softmax(teacher_logits.float() / t, dim=1)
    kd = nn.functional.kl_div(student, teacher, reduction="batchmean", log_target=True) * (t * t)
    if w >= 1:
        return kd
    return w * kd + (1 - w) * label_loss()


def agreement(predictions: list[int], reference: list[int]) -> float:
    """Share of images where two models give the same top-1 class."""
    if len(predictions) != len(reference) or not predictions:
        raise ValueError("agreement needs two equally long, non-empty prediction lists")
    return sum(int(a == b) for a, b in zip(predictions, reference, strict=True)) / len(predictions)
