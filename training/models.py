"""Model factory over timm: the five Phase 1 architectures, the attention variant, tiny test models.

``create_model`` is the one entry point; export and the ablation rebuild a model from a
checkpoint's ``arch``/``num_classes``/``model_kwargs`` through it, never from flags.

Pretrained weights come from one of two places and never from a surprise download:

- ``pretrained=True``: timm's normal source (the Hugging Face hub, or its local cache). The cache is
  looked at first; when the weights are not cached and ``HF_HUB_OFFLINE`` is set, or the hub cannot
  be reached, a ``PretrainedWeightsError`` says so at once (instead of a minute of retries and a
  hub traceback) and names the two ways forward: ``--no-pretrained`` or ``pretrained_file``.
- ``pretrained_file=PATH``: a local ``.safetensors`` / ``.pth`` / ``.bin`` file (timm or torchvision
  weights of the same architecture, or an emobench checkpoint), read with ``weights_only=True``.
  The classifier is dropped when its shape differs; any other mismatch is an error.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

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
_TRUE = ("1", "true", "yes", "on")


class UnknownArchError(EmobenchError):
    """An architecture name neither emobench nor timm knows."""


class PretrainedWeightsError(EmobenchError):
    """Pretrained weights were asked for and cannot be had (offline, not cached, or a bad file)."""


@lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def check_arch(arch: str) -> str:
    """Return ``arch`` if timm (or emobench) can build it, else raise with close matches."""
    if arch in _CUSTOM_ARCHS or arch in _timm_names():
        return arch
    close = difflib.get_close_matches(arch, list(_timm_names()) + list(_CUSTOM_ARCHS), n=3)
    raise UnknownArchError(
        f"unknown architecture {arch!r}",
        hint=(f"did you mean {', '.join(close)}? " if close else "")
        + f"Phase 1 uses {', '.join(PHASE1_ARCHS)}; any timm model name works",
    )


# ---------------------------------------------------------------------------------------------
# Attention blocks and the EmotionAttentionNetwork
# ---------------------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): reweigh channels by a gated global summary."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(channel)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class EmotionAttentionNetwork(nn.Module):
    """An EfficientNet backbone with CBAM and squeeze-and-excitation blocks before the head.

    backbone features -> CBAM -> SE -> global average pool -> dropout -> linear classifier.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: str = "efficientnet_b0",
        pretrained: bool = False,
        pretrained_file: str | os.PathLike[str] | None = None,
        drop_rate: float = 0.3,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        # Any: a timm model, whose num_features and forward_features nn.Module does not declare.
        features: Any = create_model(backbone, num_classes=0, global_pool="", pretrained=pretrained,
                                     pretrained_file=pretrained_file)
        self.backbone = features
        channels = int(features.num_features)
        self.num_features = channels
        self.cbam = CBAM(channels, reduction)
        self.se = SqueezeExcite(channels, reduction)
        self.drop_rate = float(drop_rate)
        self.classifier = nn.Linear(channels, num_classes)
        self.num_classes = num_classes
        self.pretrained_cfg = dict(getattr(self.backbone, "pretrained_cfg", {}) or {}, classifier="classifier")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.cbam(cast(Any, self.backbone).forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))
        x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes


def _attention(backbone: str):
    def build(*, num_classes: int, pretrained: bool = False, pretrained_file=None, **kwargs) -> nn.Module:
        kwargs.setdefault("backbone", backbone)
        return EmotionAttentionNetwork(num_classes=num_classes, pretrained=pretrained,
                                       pretrained_file=pretrained_file, **kwargs)

    return build


# ``emotion_attention`` takes any timm backbone via model_kwargs (tests use ``test_efficientnet``).
_CUSTOM_ARCHS: dict[str, Any] = {
    "emotion_attention": _attention("efficientnet_b0"),
    "emotion_attention_b0": _attention("efficientnet_b0"),
    "emotion_attention_b2": _attention("efficientnet_b2"),
}


# ---------------------------------------------------------------------------------------------
# Pretrained weights
# ---------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _cached_weights(arch: str) -> Path | None:
    """The file timm would load for ``arch`` if it is already in the hub or torch-hub cache."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id = cfg.hf_hub_id.split("@")[0]
        for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
            if isinstance(found, str):
                return Path(found)
    if isinstance(cfg.url, str) and cfg.url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if candidate.is_file():
            return candidate
    return None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _no_weights_error(arch: str, why: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"pretrained weights for {arch} cannot be loaded: {why}",
        hint="train from scratch with --no-pretrained (or `pretrained: false`), or point "
        "`pretrained_file` (--set pretrained_file=PATH) at a local .safetensors/.pth file of the same "
        "architecture; on a machine with internet, running once fills timm's cache",
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely and unwrap the usual containers to a flat state dict."""
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained_file {path} does not exist",
                                     hint="give the path of a local .safetensors or .pth weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader failure becomes one message naming the file
        raise PretrainedWeightsError(
            f"pretrained_file {path} is not a readable weights file ({str(exc).splitlines()[0][:200]})",
            hint="files are read with weights_only=True: save a plain state dict (tensors only)",
        ) from exc
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"pretrained_file {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights_file(model: nn.Module, path: str | os.PathLike[str], *, arch: str) -> nn.Module:
    """Load a local weights file into ``model``; the classifier may differ (it is left as built).

    Raises:
        PretrainedWeightsError: unreadable file, or weights that do not fit ``arch`` beyond the head.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    head = str((getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "classifier")
    head_prefixes = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))

    def is_head(key: str) -> bool:
        return key.startswith(head_prefixes)

    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong_shape = [k for k in state if k in own and own[k].shape != state[k].shape and not is_head(k)]
    missing = [k for k in own if k not in usable and not is_head(k) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not is_head(k)]
    if wrong_shape or missing or unexpected:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
            for label, keys in (("wrong shape", wrong_shape), ("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise PretrainedWeightsError(
            f"pretrained_file {path} does not fit {arch} ({detail})",
            hint=f"use weights saved from the same architecture ({arch})",
        )
    model.load_state_dict(usable, strict=False)
    log.info("loaded %d tensors for %s from %s", len(usable), arch, path)
    return model


def create_model(
    arch: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    pretrained_file: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``arch`` with a classifier for ``num_classes``.

    Args:
        arch: a timm model name or an emobench architecture (``emotion_attention_b0``/``_b2``).
        num_classes: size of the new classification head (0: no head, features only).
        pretrained: start from timm's pretrained weights (cache first; see the module docstring).
        pretrained_file: a local weights file to start from instead (implies pretrained).
        **kwargs: passed to the model constructor (e.g. ``drop_rate``).

    Raises:
        UnknownArchError: ``arch`` is not a known model.
        PretrainedWeightsError: weights were asked for and cannot be had.
    """
    import timm

    check_arch(arch)
    if arch in _CUSTOM_ARCHS:
        return _CUSTOM_ARCHS[arch](num_classes=num_classes, pretrained=pretrained,
                                   pretrained_file=pretrained_file, **kwargs)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained_file:
        return load_weights_file(model, pretrained_file, arch=arch)
    if not pretrained:
        return model
    cached = _cached_weights(arch)
    if cached is not None:
        return load_weights_file(model, cached, arch=arch)
    from timm.models import get_pretrained_cfg

    published = get_pretrained_cfg(arch)
    if published is None or not (published.hf_hub_id or published.url):
        raise _no_weights_error(arch, "timm publishes no pretrained weights for it")
    if _hub_offline():
        raise _no_weights_error(arch, "HF_HUB_OFFLINE is set and timm's local cache does not hold them")
    if not _hub_reachable():
        raise _no_weights_error(arch, "they are not in timm's local cache and the hub cannot be reached (offline?)")
    try:
        return timm.create_model(arch, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # hub, HTTP and file errors: one line, not a hub traceback
        raise _no_weights_error(arch, f"the download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc


def reset_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier with a fresh one for ``num_classes`` (timm models and the attention net)."""
    cast(Any, model).reset_classifier(num_classes)  # timm's, not nn.Module's
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(input_size: tuple[int, int, int], batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, *input_size)
