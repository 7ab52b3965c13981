"""The config of a QAT run: the FP32 run's own config, its ``qat`` section, and what the user changes.

``emobench train qat --init-from RUN`` trains on what the FP32 run trained on (data, classes, image
size, batch size, augmentation, seed...), read from that run's checkpoint, so a QAT run needs no
config file of its own; ``--config FILE`` overrides it with a YAML file's keys (typically just its
``qat:`` section, see ``training/configs/phase2.yaml``), then ``--set`` and the options. The phase is
``qat``, the best epoch is picked by top-1 agreement with the FP32 model (``monitor: agreement``), and
the run folder is ``<out>/qat/<run-name>-<arch>`` beside the FP32 run's phase folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.config import PHASES, ConfigError, TrainConfig, config_from_dict, merge_sections, read_yaml

log = logging.getLogger(__name__)

# fields that describe the FP32 run itself and must not carry over into the QAT run
_NOT_INHERITED = ("phase", "archs", "pretrained", "pretrained_file", "init_from", "resume", "run_name", "out_dir",
                  "monitor", "epochs", "lr")


def init_checkpoint_file(init_from: str | Path) -> Path:
    """The checkpoint file ``--init-from`` names (a file, a run folder, or a phase folder's ``latest``)."""
    from training.runs import latest_checkpoint

    path = Path(init_from)
    return latest_checkpoint(path) if path.is_dir() else path


def resolve_qat_config(init_from: str | Path, *, config_path: str | Path | None = None,
                       overrides: Mapping[str, Any] = {}) -> TrainConfig:  # noqa: B006 - read only
    """The ``TrainConfig`` of a QAT run starting from ``init_from``.

    Args:
        init_from: the finished FP32 run: a checkpoint, a run folder, or a phase folder (its latest).
        config_path: a YAML file whose keys override the FP32 run's config (e.g. a ``qat:`` section).
        overrides: field -> value (``{"qat": {"epochs": 2}}``, ``{"out_dir": "runs"}``); None values are ignored.

    Raises:
        CheckpointError: ``init_from`` is not a readable checkpoint.
        ConfigError: bad keys or values anywhere.
    """
    from training.checkpoint import load_checkpoint

    path = init_checkpoint_file(init_from)
    ckpt = load_checkpoint(path)
    base: dict[str, Any] = {k: v for k, v in dict(ckpt.config).items() if k not in _NOT_INHERITED}
    base.setdefault("arch", ckpt.arch)
    base.setdefault("classes", list(ckpt.class_names))
    base.setdefault("image_size", ckpt.image_size)
    if config_path is not None:
        data, _ = read_yaml(config_path)
        base = merge_sections(base, data)
    resolved = path.resolve()
    out_dir = resolved.parents[2] if len(resolved.parents) > 2 and resolved.parent.parent.name in PHASES else "runs"
    values = merge_sections(base, {"phase": "qat", "init_from": str(path), "pretrained": False,
                                   "out_dir": str(out_dir), "monitor": "agreement"})
    values = merge_sections(values, {k: v for k, v in overrides.items() if v is not None})
    if values.get("data_root") is None:
        raise ConfigError(f"--init-from {path}: its config names no data_root to train on",
                          hint="pass --data ROOT (the dataset the FP32 run trained on)")
    qat = values.get("qat")
    if isinstance(qat, Mapping):
        values["qat"] = dict(qat)
    config = config_from_dict(values, source=f"QAT config from {path}")
    return config.replace(epochs=config.qat.epochs, lr=config.qat.lr)
