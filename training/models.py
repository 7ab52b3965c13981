"""Model factory over timm: the five Phase 1 architectures, the attention variant, tiny test models.

``create_model`` is the one entry point; export and the ablation rebuild a model from a
checkpoint's ``arch``/``num_classes``/``model_kwargs`` through it, never from flags.
"""

from __future__ import annotations

import difflib
import logging
from functools import lru_cache

import torch
from torch import nn

from emobench_common.errors import EmobenchError

log = logging.getLogger(__name__)

# The original study's Phase 1 candidates, in its order.
PHASE1_ARCHS: tuple[str, ...] = (
    "efficientnet_b0",
    "resnet50",
    "mobilenetv3_small_100",
    "mobilevit_xxs",
    "densenet121",
)
PHASE2_ARCH = "efficientnet_b0"


class UnknownArchError(EmobenchError):
    """An architecture name neither emobench nor timm knows."""


@lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def check_arch(arch: str) -> str:
    """Return ``arch`` if timm (or emobench) can build it, else raise with close matches."""
    if arch in _timm_names() or arch in _CUSTOM_ARCHS:
        return arch
    close = difflib.get_close_matches(arch, list(_timm_names()) + list(_CUSTOM_ARCHS), n=3)
    raise UnknownArchError(
        f"unknown architecture {arch!r}",
        hint=(f"did you mean {', '.join(close)}? " if close else "")
        + f"Phase 1 uses {', '.join(PHASE1_ARCHS)}; any timm model name works",
    )


_CUSTOM_ARCHS: dict[str, object] = {}


def create_model(arch: str, *, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``arch`` with a classifier for ``num_classes``.

    Args:
        arch: a timm model name or an emobench architecture.
        num_classes: size of the new classification head.
        pretrained: load timm's pretrained weights (needs the network or timm's cache).
        **kwargs: passed to the model constructor (e.g. ``drop_rate``).
    """
    import timm

    check_arch(arch)
    if arch in _CUSTOM_ARCHS:
        return _CUSTOM_ARCHS[arch](num_classes=num_classes, pretrained=pretrained, **kwargs)  # type: ignore[operator]
    return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(input_size: tuple[int, int, int], batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, *input_size)
