"""Quantization-aware training: PT2E QAT with XNNPACK's quantizer, distilled from the FP32 model.

``emobench train qat --init-from RUN`` fine-tunes a finished FP32 run with fake quantization, so the
weights learn to live with INT8 rounding. The recipe (PyTorch's PT2E QAT, as ExecuTorch documents it):

1. ``torch.export`` the FP32 model (batch axis dynamic) and ``prepare_qat_pt2e`` it with
   ``XNNPACKQuantizer``'s QAT config: per-channel symmetric INT8 weights, static INT8 activations,
   each quantized tensor behind a ``FusedMovingAvgObsFakeQuantize`` (batch norms are folded into their
   convolutions in the simulated graph, as they will be on the device);
2. train the prepared graph (``QatModel`` below) with the Phase 2 loop: its config, seeded loaders,
   gradient clipping, AdamW and the schedule, checkpoints and ``--resume``, preemption, TensorBoard;
3. after ``freeze_bn_after`` epochs the batch-norm statistics stop moving (the graph runs in eval
   mode), after ``freeze_observers_after`` the quantization ranges are fixed, so the last epochs fit
   the weights to the final INT8 grid;
4. export: ``convert_pt2e`` turns the fake quantization into real quantize/dequantize pairs that the
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
import copy
import logging
from collections.abc import Callable, Mapping
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
    """

    epochs: int = 4
    lr: float = 0.0001
    distill_weight: float = 1.0
    temperature: float = 2.0
    freeze_bn_after: int | None = 0
    freeze_observers_after: int | None = 3

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise QatError(f"qat.epochs must be positive, got {self.epochs}")
        if not self.lr > 0:
            raise QatError(f"qat.lr must be > 0, got {self.lr}")
        if not 0 <= self.distill_weight <= 1:
            raise QatError(f"qat.distill_weight must lie in [0, 1], got {self.distill_weight}")
        if not self.temperature > 0:
            raise QatError(f"qat.temperature must be > 0, got {self.temperature}")
        for name in ("freeze_bn_after", "freeze_observers_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QatError(f"qat.{name} must be >= 0 or null, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "distill_weight": self.distill_weight,
                "temperature": self.temperature, "freeze_bn_after": self.freeze_bn_after,
                "freeze_observers_after": self.freeze_observers_after}


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

    def converted(self) -> Any:
        """A copy with the fake quantization turned into quantize/dequantize pairs (``convert_pt2e``).

        This is the graph ``export`` lowers to XNNPACK; its batch axis stays dynamic.
        """
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        graph = copy.deepcopy(self.graph)
        move_exported_model_to_eval(graph)
        return convert_pt2e(graph)


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
    prepared = prepare_qat_pt2e(program.module(), qat_quantizer())
    return QatModel(prepared)


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
