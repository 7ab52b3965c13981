"""The ablation plan: data, built and validated before anything runs, stored with the run.

A plan fixes everything a run does: the manifest (and the sha256 of every artifact), the seen and
unseen datasets and the exact image ids of every experiment (deterministic from the seed; no image
is reused before its dataset is exhausted), the number of experiments, the batch size, the dataset
order (alternating, seen first), the models, the targets, warm-up runs, timed repeats, threads, CPU
affinity and the cooldown policy, and the order the models run in within each experiment
(shuffled, seeded, so neither model always runs on a warmer phone).

``build_plan(PlanConfig(...))`` reads the manifest and the datasets and returns a frozen
``AblationPlan``; ``plan.to_dict()`` / ``AblationPlan.from_dict`` round-trip it through JSON, and
``plan.fingerprint`` is the sha256 of that JSON: a resumed run must have the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emobench_common.errors import EmobenchError
from emobench_common.fileio import sha256_file
from emobench_common.input_spec import InputSpec, InputSpecError
from emobench_common.names import EAGER_KEY

log = logging.getLogger(__name__)

PLAN_VERSION = 1
ROLES = ("seen", "unseen")
HOST_TARGETS = ("host-cpu", "host-cuda")


class PlanError(EmobenchError):
    """A plan that cannot run: bad settings, missing or changed artifacts, too few images."""


# --- the plan's parts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the plan: where it is, which split, how many images it has."""

    role: str
    root: str
    kind: str
    split: str
    name: str
    n_images: int
    image_ids_sha256: str
    faces: bool = False  # images cropped to their face on the fly (training.faces), as `--faces` asks


@dataclass(frozen=True)
class ModelSpec:
    """One model to compare: a manifest artifact, or the eager FP32 model from the checkpoint.

    ``path`` is relative to the manifest's folder (the checkpoint's absolute path for eager).
    ``batch_size`` is the batch the artifact was exported with (None: any batch).
    """

    key: str
    format: str
    precision: str
    mode: str | None
    path: str
    sha256: str
    size_bytes: int
    batch_size: int | None

    @property
    def label(self) -> str:
        return f"{self.format} {self.precision}" + (f"-{self.mode}" if self.mode else "")


@dataclass(frozen=True)
class TargetSpec:
    """A target: ``host-cpu``, ``host-cuda`` or ``android:<serial or host:port>``."""

    spec: str
    kind: str
    address: str = ""

    @staticmethod
    def parse(text: str) -> TargetSpec:
        """Parse a ``--target`` value.

        Raises:
            PlanError: not one of the three forms.
        """
        text = text.strip()
        if text in HOST_TARGETS:
            return TargetSpec(text, text)
        if text.startswith("android:") and text[len("android:"):].strip():
            address = text[len("android:"):].strip()
            if any(c.isspace() for c in address) or "\0" in address:
                raise PlanError(f"target {text!r}: the device address must not contain spaces")
            return TargetSpec(f"android:{address}", "android", address)
        raise PlanError(f"unknown target {text!r}",
                        hint="use host-cpu, host-cuda or android:<serial or host:port> (e.g. android:127.0.0.1:5555)")


@dataclass(frozen=True)
class Experiment:
    """One experiment: a batch of images from one dataset, and the order the models run on it."""

    index: int
    role: str
    dataset: str
    image_ids: tuple[str, ...]
    labels: tuple[int, ...]
    model_order: tuple[str, ...]


@dataclass(frozen=True)
class AblationPlan:
    """Everything a run will do. Build it with :func:`build_plan`; it never changes afterwards."""

    version: int
    seed: int
    manifest_path: str
    manifest_sha256: str
    checkpoint_path: str
    checkpoint_sha256: str
    input_spec: InputSpec
    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]
    targets: tuple[TargetSpec, ...]
    experiments: tuple[Experiment, ...]
    batch_size: int
    warmup: int
    repeats: int
    threads: int | None
    affinity_mask: str | None
    cooldown_temp_c: float | None
    cooldown_timeout_s: float
    allow_reuse: bool

    @property
    def manifest_dir(self) -> Path:
        return Path(self.manifest_path).parent

    def model(self, key: str) -> ModelSpec:
        for m in self.models:
            if m.key == key:
                return m
        raise KeyError(key)

    def dataset(self, role: str) -> DatasetSpec:
        for d in self.datasets:
            if d.role == role:
                return d
        raise KeyError(role)

    def model_path(self, model: ModelSpec) -> Path:
        """The model file on the host (artifact paths are relative to the manifest folder)."""
        if model.format == "eager":
            return Path(model.path)
        return self.manifest_dir / model.path

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return _jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the plan."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> AblationPlan:
        """Rebuild a plan from :meth:`to_dict` output (e.g. the JSON stored with a run).

        Raises:
            PlanError: a field is missing or has the wrong shape.
        """
        try:
            if int(data["version"]) != PLAN_VERSION:
                raise PlanError(f"plan version {data['version']} is not {PLAN_VERSION}; this emobench cannot resume it")
            return AblationPlan(
                version=int(data["version"]), seed=int(data["seed"]),
                manifest_path=str(data["manifest_path"]), manifest_sha256=str(data["manifest_sha256"]),
                checkpoint_path=str(data["checkpoint_path"]), checkpoint_sha256=str(data["checkpoint_sha256"]),
                input_spec=_stored_input_spec(data),
                datasets=tuple(DatasetSpec(**d) for d in data["datasets"]),
                models=tuple(ModelSpec(**m) for m in data["models"]),
                targets=tuple(TargetSpec(**t) for t in data["targets"]),
                experiments=tuple(Experiment(index=int(e["index"]), role=e["role"], dataset=e["dataset"],
                                             image_ids=tuple(e["image_ids"]), labels=tuple(int(v) for v in e["labels"]),
                                             model_order=tuple(e["model_order"])) for e in data["experiments"]),
                batch_size=int(data["batch_size"]), warmup=int(data["warmup"]), repeats=int(data["repeats"]),
                threads=None if data["threads"] is None else int(data["threads"]),
                affinity_mask=data["affinity_mask"],
                cooldown_temp_c=None if data["cooldown_temp_c"] is None else float(data["cooldown_temp_c"]),
                cooldown_timeout_s=float(data["cooldown_timeout_s"]), allow_reuse=bool(data["allow_reuse"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"stored plan is malformed ({type(exc).__name__}: {exc})") from exc
        except InputSpecError as exc:
            raise PlanError(f"stored plan is malformed ({exc.message})") from exc

    def differences(self, other: AblationPlan) -> list[str]:
        """Top-level fields that differ from ``other`` (empty when the plans are the same)."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _stored_input_spec(data: Mapping[str, Any]) -> InputSpec:
    """The plan's input contract; plans stored before it was one object held its fields flat (and
    ``crop_pct`` was always there), so both read back the same."""
    if "input_spec" in data:
        return InputSpec.from_dict(data["input_spec"], source="stored plan input_spec")
    return InputSpec.from_dict(data, source="stored plan")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --- building -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanConfig:
    """What the user asked for; :func:`build_plan` resolves it into an :class:`AblationPlan`.

    Attributes:
        manifest: the export manifest (``manifest.json``).
        seen, unseen: dataset roots (either may be None, then every experiment uses the other).
        targets: target specs (``host-cpu``, ``host-cuda``, ``android:...``).
        experiments: number of experiments (alternating seen / unseen, seen first).
        batch_size: images per experiment.
        warmup, repeats: untimed and timed executions of each model on each batch.
        threads: CPU threads for every runtime (``--cpu_threads`` on a device); None = runtime default.
        affinity: CPU affinity as a hex mask (``taskset`` on a device, ``sched_setaffinity`` on the host).
        cooldown_temp_c: before each experiment wait until the target is below this temperature.
        cooldown_timeout_s: the longest a cooldown waits.
        seed: drives image selection and model order.
        seen_split, unseen_split: dataset splits to draw from.
        seen_kind, unseen_kind: dataset layouts ('auto' detects; e.g. 'rafdb_folder' for a RAF-DB copy
            sorted into emotion-named folders, which would be detected as FER-2013 images).
        unseen_faces: crop the unseen photos to their face on the fly (EXIF-upright, most confident face).
        models: model keys to run (default: every FP32 and INT8 artifact plus eager FP32).
        include_eager: add the checkpoint's eager FP32 model (host targets only).
        allow_reuse: draw images again once a dataset is exhausted instead of refusing.
    """

    manifest: Path
    seen: Path | None
    unseen: Path | None
    targets: tuple[str, ...] = ("host-cpu",)
    experiments: int = 30
    batch_size: int = 16
    warmup: int = 3
    repeats: int = 5
    threads: int | None = None
    affinity: str | None = None
    cooldown_temp_c: float | None = None
    cooldown_timeout_s: float = 600.0
    seed: int = 0
    seen_split: str = "test"
    unseen_split: str = "all"
    seen_kind: str = "auto"
    unseen_kind: str = "auto"
    unseen_faces: bool = False
    models: tuple[str, ...] | None = None
    include_eager: bool = True
    allow_reuse: bool = False
    verify_artifacts: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


def model_key(fmt: str, precision: str, mode: str | None) -> str:
    """``<format>-<precision>[-<mode>]``, e.g. ``executorch-int8-dynamic``."""
    return f"{fmt}-{precision}" + (f"-{mode}" if mode else "")


def sub_seed(seed: int, purpose: str) -> int:
    """A 64-bit seed for one purpose, derived from the plan seed (stable across Python versions)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "big")


def normalize_affinity(mask: str | None) -> str | None:
    """A CPU mask as lowercase hex without ``0x`` (``'F0'`` -> ``'f0'``).

    Raises:
        PlanError: not a non-zero hex number.
    """
    if mask is None:
        return None
    text = str(mask).strip().lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{1,16}", text) or int(text, 16) == 0:
        raise PlanError(f"CPU affinity {mask!r} is not a non-zero hex mask",
                        hint="e.g. --affinity f0 for CPUs 4-7 (the big cores on many phones)")
    return format(int(text, 16), "x")


def affinity_cpus(mask: str) -> list[int]:
    """CPU numbers in a hex mask."""
    value = int(mask, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def draw_batches(image_ids: Sequence[str], n_batches: int, batch_size: int, *, seed: int,
                 allow_reuse: bool) -> list[list[int]]:
    """Indices into ``image_ids`` for ``n_batches`` batches, drawn without replacement.

    The ids are sorted first (so the draw does not depend on file-system order), then shuffled
    with the seed; consecutive slices form the batches. When the dataset is exhausted and reuse is
    allowed, a fresh shuffle continues the draw.

    Raises:
        PlanError: more images needed than the dataset has, and reuse is not allowed.
    """
    needed = n_batches * batch_size
    order = sorted(range(len(image_ids)), key=lambda i: image_ids[i])
    if needed > len(order) and not allow_reuse:
        raise PlanError(f"needs {needed} images but has {len(order)}")
    rng = random.Random(seed)
    drawn: list[int] = []
    while len(drawn) < needed:
        epoch = list(order)
        rng.shuffle(epoch)
        drawn.extend(epoch)
    return [drawn[b * batch_size:(b + 1) * batch_size] for b in range(n_batches)]


def _load_dataset(root: Path, split: str, class_names: tuple[str, ...], role: str, kind: str = "auto"):
    from training.datasets import DatasetError, create_dataset

    try:
        return create_dataset(root, kind=kind, split=split, class_names=class_names, allow_empty_classes=True)
    except DatasetError as exc:
        raise PlanError(f"{role} dataset: {exc.message}", hint=exc.hint) from exc


def _check_settings(cfg: PlanConfig) -> None:
    for name, minimum in (("experiments", 1), ("batch_size", 1), ("warmup", 0), ("repeats", 1)):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < minimum:
            raise PlanError(f"ablation setting {name} must be an integer >= {minimum}, got {value!r}")
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise PlanError(f"threads must be a positive integer, got {cfg.threads!r}")
    if cfg.cooldown_temp_c is not None and not 0 < cfg.cooldown_temp_c < 150:
        raise PlanError(f"cooldown temperature {cfg.cooldown_temp_c} C is not plausible (0-150 C)")
    if cfg.cooldown_timeout_s <= 0:
        raise PlanError("cooldown timeout must be positive")
    if cfg.seen is None and cfg.unseen is None:
        raise PlanError("the ablation needs at least one dataset", hint="pass --seen and/or --unseen")
    if not cfg.targets:
        raise PlanError("the ablation needs at least one target", hint="pass --target host-cpu (repeatable)")


def build_plan(cfg: PlanConfig) -> AblationPlan:
    """Resolve a :class:`PlanConfig` into a validated plan. Nothing runs yet.

    Raises:
        PlanError: bad settings, a missing or changed artifact, a dataset with too few images
            (saying how many are needed and how many it has), unknown models or targets.
    """
    _check_settings(cfg)
    affinity = normalize_affinity(cfg.affinity)
    targets = tuple(TargetSpec.parse(t) for t in cfg.targets)
    seen_specs = [t.spec for t in targets]
    if len(set(seen_specs)) != len(seen_specs):
        raise PlanError(f"a target is listed twice: {', '.join(seen_specs)}")

    mv = read_manifest(cfg.manifest, verify=cfg.verify_artifacts)
    models: list[ModelSpec] = []
    if cfg.include_eager:
        ckpt = Path(mv.checkpoint_path)
        if not ckpt.is_file():
            raise PlanError(f"{mv.path}: the source checkpoint {ckpt} is missing, so the eager FP32 model cannot run",
                            hint="restore the checkpoint, or leave the eager model out (--no-eager)")
        if cfg.verify_artifacts and sha256_file(ckpt) != mv.checkpoint_sha256:
            raise PlanError(f"{mv.path}: the source checkpoint {ckpt} changed since the export (sha256 differs)",
                            hint="re-export from this checkpoint, or leave the eager model out (--no-eager)")
        models.append(ModelSpec(EAGER_KEY, "eager", "fp32", None, str(ckpt), mv.checkpoint_sha256,
                                ckpt.stat().st_size, None))
    for art in mv.artifacts:
        models.append(ModelSpec(model_key(art.format, art.precision, art.mode), art.format, art.precision, art.mode,
                                art.relative_path, art.sha256, art.size_bytes, art.batch_size))
    if cfg.models is not None:
        known = {m.key: m for m in models}
        unknown = [k for k in cfg.models if k not in known]
        if unknown:
            raise PlanError(f"unknown model(s) {', '.join(unknown)} in {cfg.manifest}",
                            hint=f"choose from {', '.join(known)}")
        models = [known[k] for k in dict.fromkeys(cfg.models)]
    if not models:
        raise PlanError(f"{cfg.manifest} lists no artifacts to compare")
    for m in models:
        if m.batch_size not in (None, 1, cfg.batch_size):
            raise PlanError(
                f"{m.key} was exported at batch {m.batch_size}, which is neither 1 nor the plan's batch "
                f"size {cfg.batch_size}", hint=f"use --batch-size {m.batch_size} or re-export at batch 1")

    roles = [r for r, root in (("seen", cfg.seen), ("unseen", cfg.unseen)) if root is not None]
    n_per_role = {r: 0 for r in roles}
    role_of = [roles[i % len(roles)] for i in range(cfg.experiments)]
    for r in role_of:
        n_per_role[r] += 1
    datasets: list[DatasetSpec] = []
    draws: dict[str, tuple[list[list[int]], list[str], list[int], str]] = {}
    for role in roles:
        root = Path(cfg.seen if role == "seen" else cfg.unseen).resolve()  # type: ignore[arg-type]
        split = cfg.seen_split if role == "seen" else cfg.unseen_split
        ds = _load_dataset(root, split, mv.input_spec.class_names, role, cfg.seen_kind if role == "seen" else cfg.unseen_kind)
        ids = ds.image_ids
        if len(set(ids)) != len(ids):
            raise PlanError(f"{role} dataset {root} lists an image id twice")
        try:
            batches = draw_batches(ids, n_per_role[role], cfg.batch_size, seed=sub_seed(cfg.seed, f"images:{role}"),
                                   allow_reuse=cfg.allow_reuse)
        except PlanError:
            need = n_per_role[role] * cfg.batch_size
            raise PlanError(
                f"{role} dataset {root} [{ds.split}] has {len(ids)} images; the plan needs {need} "
                f"({n_per_role[role]} experiments x batch {cfg.batch_size}) without reusing an image",
                hint="point at a larger dataset, lower --experiments or --batch-size, or pass --allow-reuse",
            ) from None
        name = _dataset_name(ds.kind, root)
        datasets.append(DatasetSpec(role=role, root=str(root), kind=ds.kind, split=ds.split, name=name,
                                    n_images=len(ids), image_ids_sha256=hashlib.sha256(
                                        "\n".join(sorted(ids)).encode()).hexdigest(),
                                    faces=cfg.unseen_faces and role == "unseen"))
        draws[role] = (batches, ids, ds.targets, name)

    order_rng = random.Random(sub_seed(cfg.seed, "model-order"))
    taken = {r: 0 for r in roles}
    experiments: list[Experiment] = []
    for index, role in enumerate(role_of):
        batches, ids, labels, name = draws[role]
        batch = batches[taken[role]]
        taken[role] += 1
        order = [m.key for m in models]
        order_rng.shuffle(order)
        experiments.append(Experiment(index=index, role=role, dataset=name, image_ids=tuple(ids[i] for i in batch),
                                      labels=tuple(int(labels[i]) for i in batch), model_order=tuple(order)))
    return AblationPlan(
        version=PLAN_VERSION, seed=int(cfg.seed), manifest_path=str(mv.path), manifest_sha256=mv.sha256,
        checkpoint_path=str(mv.checkpoint_path), checkpoint_sha256=mv.checkpoint_sha256,
        input_spec=mv.input_spec,
        datasets=tuple(datasets), models=tuple(models), targets=targets, experiments=tuple(experiments),
        batch_size=cfg.batch_size, warmup=cfg.warmup, repeats=cfg.repeats, threads=cfg.threads,
        affinity_mask=affinity, cooldown_temp_c=cfg.cooldown_temp_c, cooldown_timeout_s=float(cfg.cooldown_timeout_s),
        allow_reuse=cfg.allow_reuse,
    )


@dataclass(frozen=True)
class _ArtifactView:
    format: str
    precision: str
    mode: str | None
    relative_path: str
    sha256: str
    size_bytes: int
    batch_size: int


@dataclass(frozen=True)
class ManifestView:
    """What the ablation reads from an export manifest."""

    path: Path
    sha256: str
    checkpoint_path: Path
    checkpoint_sha256: str
    input_spec: InputSpec
    artifacts: tuple[_ArtifactView, ...]


def read_manifest(path: Path, *, verify: bool = True) -> ManifestView:
    """Load a manifest with ``export.manifest.load_manifest`` (files sha256-checked when ``verify``).

    Raises:
        PlanError: the manifest is missing, invalid, unsafe, or an artifact is missing or changed.
    """
    from export.errors import ManifestError
    from export.manifest import load_manifest

    try:
        manifest = load_manifest(path, verify_files=verify)
    except ManifestError as exc:
        raise PlanError(exc.message, hint=exc.hint) from exc
    spec = manifest.input_spec  # older manifests: the contract's defaults (crop_pct 1.0, bilinear, 0..1)
    _, height, width = spec.input_shape
    if height != width:
        raise PlanError(f"{manifest.path}: input {height}x{width} is not square; the ablation preprocesses "
                        "square crops")
    ckpt = Path(str(manifest.checkpoint["path"]))
    if not ckpt.is_absolute():
        ckpt = (manifest.folder / ckpt).resolve()
    arts = tuple(
        _ArtifactView(a.format, a.precision, a.mode, a.path.relative_to(manifest.folder).as_posix(), a.sha256,
                      int(a.size_bytes), int(a.batch_size))
        for a in manifest.artifacts)
    return ManifestView(
        path=manifest.path.resolve(), sha256=sha256_file(manifest.path), checkpoint_path=ckpt,
        checkpoint_sha256=str(manifest.checkpoint["sha256"]), input_spec=spec, artifacts=arts)


def _dataset_name(kind: str, root: Path) -> str:
    family = {"rafdb_basic": "rafdb", "rafdb_folder": "rafdb", "fer2013_csv": "fer2013",
              "fer2013_folder": "fer2013"}.get(kind, kind)
    return f"{family}:{root.name}"


def verify_plan_files(plan: AblationPlan) -> None:
    """Check every model file still has the sha256 the plan recorded.

    Raises:
        PlanError: a file is missing or changed (naming it and both hashes).
    """
    for m in plan.models:
        path = plan.model_path(m)
        if not path.is_file():
            raise PlanError(f"{m.key}: {path} is missing", hint="restore the export or start a new run")
        got = sha256_file(path)
        if got != m.sha256:
            raise PlanError(f"{m.key}: {path} changed since the plan was made (sha256 {got[:12]}..., "
                            f"plan has {m.sha256[:12]}...)", hint="start a new run for the new export")
