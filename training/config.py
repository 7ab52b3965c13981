"""Training configuration: one frozen dataclass, read from YAML only at the edge.

``load_config(path, overrides)`` reads a YAML file (``training/configs/phase1.yaml`` or
``phase2.yaml``, or a user's own), applies ``key=value`` overrides from the command line, checks
every key against the dataclass (a typo gets the close matches) and every value against the field's
type, and returns a ``TrainConfig``. Library code takes a ``TrainConfig`` and never reads YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_text
from training.labels import EMOTIONS
from training.qat import QatError, QatSettings

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PHASES = ("phase1", "phase2", "qat")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "none")
MONITORS = ("accuracy", "f1_macro", "f1_weighted", "loss", "agreement")  # agreement: QAT only


class ConfigError(EmobenchError):
    """A config file or override with an unknown key or a value of the wrong type."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Defaults are Phase 2's (the original study's final run)."""

    # what to train
    phase: str = "phase2"
    arch: str = "efficientnet_b0"
    archs: tuple[str, ...] = ()  # Phase 1: the candidates `emobench train phase1` trains in turn
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    drop_rate: float = 0.2
    pretrained: bool = True
    pretrained_file: str | None = None
    init_from: str | None = None  # an emobench checkpoint (e.g. Phase 1's winner) to start from
    # data
    data_root: str | None = None
    dataset_kind: str = "auto"
    skip_bad: bool = False  # skip (and count) undecodable images and bad label lines instead of stopping
    classes: tuple[str, ...] = EMOTIONS
    val_split: str = "auto"  # 'val', 'test', or 'auto': 'val' if the dataset has one, else held out
    val_fraction: float = 0.1  # share of train held out (stratified, seeded) when there is no val split
    test_split: str = "test"
    limit_train_images: int | None = None  # a stratified, seeded subset: for quick runs and CI
    limit_eval_images: int | None = None
    image_size: int = 224
    augment: bool = True
    workers: int = 2
    # optimisation
    batch_size: int = 16
    epochs: int = 30
    max_steps_per_epoch: int | None = None
    optimizer: str = "adamw"
    lr: float = 0.0005
    weight_decay: float = 0.001
    momentum: float = 0.9
    scheduler: str = "cosine"
    min_lr: float = 1e-6
    step_size_epochs: int = 10
    gamma: float = 0.1
    mixup_alpha: float = 0.2  # 0 disables mixup
    label_smoothing: float = 0.1
    grad_clip_norm: float | None = 1.0
    early_stopping_patience: int | None = 10
    monitor: str = "accuracy"  # validation metric that picks the best weights and drives early stopping
    # quantization-aware training (`emobench train qat`): its epochs and lr replace the ones above
    qat: QatSettings = field(default_factory=QatSettings)
    # machinery
    seed: int = 42
    deterministic: bool = True
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1'
    amp: bool = True  # mixed precision, only ever on CUDA
    sync_batchnorm: bool = True  # under DDP on CUDA
    out_dir: str = "runs"
    run_name: str | None = None  # default: a timestamp; the run folder is <out_dir>/<phase>/<run_name>-<arch>
    resume: str | None = None  # 'auto' (the run named by run_name, else the newest unfinished one) or a path
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        _check_choice("phase", self.phase, PHASES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("monitor", self.monitor, MONITORS)
        _check_choice("val_split", self.val_split, ("auto", "val", "test", "train"))
        positive = ("image_size", "batch_size", "epochs", "step_size_epochs")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"config field {name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps_per_epoch", "limit_train_images", "limit_eval_images", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"config field {name} must be positive or null, got {value}")
        for name, ok, rule in (("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                               ("mixup_alpha", self.mixup_alpha >= 0, ">= 0"),
                               ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)")):
            if not ok:
                raise ConfigError(f"config field {name} must be {rule}, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"config field val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise ConfigError(f"config field workers must be >= 0, got {self.workers}")
        if self.monitor == "agreement" and self.phase != "qat":
            raise ConfigError("config field monitor=agreement (top-1 agreement with the FP32 model) exists only in "
                              "the qat phase", hint="use accuracy, f1_macro, f1_weighted or loss")
        if self.phase == "qat" and not self.init_from:
            raise ConfigError("the qat phase needs init_from: the finished FP32 run (or its checkpoint) to start from",
                              hint="emobench train qat --init-from runs/phase2/latest")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ConfigError(f"config field classes needs at least two distinct classes, got {list(self.classes)}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (checked like overrides)."""
        return _build(merge_sections(self.to_dict(), changes), source="replace()")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples), for YAML, JSON and the checkpoint."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, QatSettings):
                out[f.name] = value.to_dict()
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else (dict(value) if isinstance(value, dict) else value)
        return out


def _check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"config field {name}={value!r} is not one of {', '.join(choices)}")


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
SECTIONS: tuple[str, ...] = ("qat",)  # fields that are mappings of fields of their own


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=3, cutoff=0.5)
    return ConfigError(
        f"{where}: unknown config key {key!r}" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""),
        hint=f"known keys: {', '.join(FIELD_NAMES)}",
    )


def _coerce(name: str, value: Any, hint_type: Any, where: str) -> Any:
    """Check ``value`` against the field type; accept the obvious conversions (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint_type)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint_type)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0], where)
    if hint_type is QatSettings:
        return _coerce_section(name, value, hint_type, where)
    bad = ConfigError(f"{where}: config field {name} expects {_type_name(hint_type)}, got {value!r}")
    if hint_type is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint_type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint_type is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if hint_type is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise bad
    if origin is dict or hint_type is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    return value


def _coerce_section(name: str, value: Any, section_type: type[QatSettings], where: str) -> QatSettings:
    """A nested section (``qat:``): a mapping of its own fields, each checked like a top-level one."""
    if isinstance(value, section_type):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: config section {name} must be a mapping of its fields, got {value!r}",
                          hint=f"fields: {', '.join(f.name for f in dataclasses.fields(section_type))}")
    hints = typing.get_type_hints(section_type)
    kwargs = {}
    for key, item in value.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=3, cutoff=0.5)
            raise ConfigError(f"{where}: unknown key {name}.{key}"
                              + (f"; did you mean {' or '.join(f'{name}.{c}' for c in close)}?" if close else ""),
                              hint=f"fields of {name}: {', '.join(hints)}")
        kwargs[key] = _coerce(f"{name}.{key}", item, hints[key], where)
    try:
        return section_type(**kwargs)
    except QatError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _type_name(hint_type: Any) -> str:
    if typing.get_origin(hint_type) is tuple:
        return "a list of names"
    return getattr(hint_type, "__name__", str(hint_type))


def _build(values: Mapping[str, Any], *, source: str, lines: Mapping[str, int] | None = None) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    kwargs = {}
    for key, value in values.items():
        where = f"{source}, line {lines[key]}" if lines and key in lines else source
        if key not in hints:
            raise _unknown_key(key, where)
        kwargs[key] = _coerce(key, value, hints[key], where)
    try:
        return TrainConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "classes=anger,happy"]`` -> ``{"epochs": 3, "classes": "anger,happy"}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE", hint="e.g. --set epochs=3 --set lr=0.001")
        section, dot, sub = key.partition(".")
        if section not in FIELD_NAMES:
            raise _unknown_key(section, f"override {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if dot:  # a field of a section: --set qat.epochs=2
            if section not in SECTIONS:
                raise ConfigError(f"override {item!r}: config field {section} has no fields of its own")
            out.setdefault(section, {})[sub] = value
        else:
            out[key] = value
    return out


def merge_sections(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``{**base, **changes}``, except that a section (``qat``) given as a mapping updates field by field."""
    out = dict(base)
    for key, value in changes.items():
        if key in SECTIONS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping | QatSettings):
            old = out[key].to_dict() if isinstance(out[key], QatSettings) else dict(out[key])
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


def phase_config_path(phase: str) -> Path:
    """The packaged defaults of ``phase`` ('phase1' or 'phase2')."""
    _check_choice("phase", phase, PHASES)
    return CONFIG_DIR / f"{phase}.yaml"


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in a YAML config file and the line of each top-level key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path} ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}")
    lines: dict[str, int] = {}
    for i, line in enumerate(text.splitlines(), start=1):
        m = re.match(r"^([A-Za-z_][\w-]*)\s*:", line)
        if m:
            lines.setdefault(m.group(1), i)
    return data, lines


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    *,
    phase: str | None = None,
    keep_none: bool = False,
) -> TrainConfig:
    """Read a YAML config (or the packaged one of ``phase``), apply overrides, validate.

    Args:
        path: a YAML file; default ``training/configs/<phase>.yaml``.
        overrides: ``{"epochs": 3}`` or ``["epochs=3"]``; in a mapping, values ``None`` are dropped (an
            option the user did not give never overrides the file) unless ``keep_none``.
        phase: which packaged defaults to start from when ``path`` is None.

    Raises:
        ConfigError: unknown key (with close matches), wrong type, or an invalid value.
    """
    if path is None:
        path = phase_config_path(phase or "phase2")
    data, lines = read_yaml(path)
    for key in data:
        if key not in FIELD_NAMES:
            raise _unknown_key(key, f"{path}, line {lines.get(key, '?')}")
    if isinstance(overrides, Mapping):
        overrides = {k: v for k, v in overrides.items() if keep_none or v is not None}
    else:
        overrides = parse_overrides(overrides)  # an explicit --set key=null does clear a field
    data = merge_sections(data, overrides)
    lines = {k: v for k, v in lines.items() if k not in overrides}
    if phase is not None:
        data.setdefault("phase", phase)
    return _build(data, source=str(path), lines=lines)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically), so a run can be repeated from its folder."""
    text = "# resolved emobench training config\n" + yaml.safe_dump(config.to_dict(), sort_keys=False)
    return atomic_write_text(path, text)


def config_from_dict(values: Mapping[str, Any], *, source: str = "checkpoint") -> TrainConfig:
    """Rebuild a config saved with ``to_dict`` (keys this version no longer knows are an error)."""
    return _build(dict(values), source=source)
