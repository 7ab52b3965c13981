"""The demo: the original study's whole workflow on the built-in sample data, end to end.

Stages (each writes a ``.stage.json`` marker with the settings it ran with; a re-run reuses a stage
whose marker matches, unless ``fresh``):

1. ``data``: generate the synthetic sample (RAF-DB, FER-2013 and custom layouts).
2. ``train``: EfficientNet-B0, briefly, at a small image size (timm's pretrained weights when they
   are in the local cache, else from scratch; the demo says which).
3. ``evaluate``: the best checkpoint on the seen test split and the unseen custom photos, with plots.
3b. ``qat`` (with ``qat=True``, ``emobench demo --qat``): quantization-aware training from that run
   (``emobench train qat``), whose checkpoint the export then reads (FP32 reference + the QAT graph).
4. ``export``: every format x precision (TorchScript, ExecuTorch, ONNX; FP32, the original study's dynamic
   INT8 and, for ExecuTorch, hybrid INT8: the full-INT8 path measured best on this model; int8-qat
   with ``qat``).
5. ``ablation``: start the virtual device, run the experiments on host-cpu, host-cuda where CUDA is
   present, the virtual device and any phone given, into ``results.db``.
6. ``report``: the HTML/Markdown/CSV report; then the virtual device stops.

``run_demo(DemoConfig(...), on_event=...)`` returns a ``DemoResult``; progress goes to the
``on_event`` callback (the CLI draws it with rich) and to ``logging``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_json
from training.sample import SampleConfig

log = logging.getLogger(__name__)

STAGES = ("data", "train", "evaluate", "qat", "export", "ablation", "report")  # "qat" runs only with DemoConfig.qat
MARKER = ".stage.json"
NUM_CLASSES = 7


class DemoError(EmobenchError):
    """A demo stage that cannot run or whose result is unusable."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does. Defaults: the full demo (under 10 minutes on 2 cores).

    Attributes:
        out_dir: every output goes under this folder.
        devices: extra Android targets (``android:<serial or host:port>``, or a bare serial/address).
        fresh: redo every stage even when its marker matches.
        sample: sizes of the generated sample (custom photos: 36 per class, so 15 unseen batches of 16
            never reuse an image).
        arch, image_size, epochs, batch_size, lr: the brief training run.
        max_steps_per_epoch: cap on optimizer steps per epoch (None: whole epochs).
        min_test_accuracy: the demo's bar on the seen test split (chance is 1/7 = 14.3%); a model
            below it is reported as a failed check, not hidden.
        formats, int8_modes: what to export. ``dynamic`` is the original study's method (depthwise convs stay
            FP32); ``hybrid`` is the full-INT8 path (every layer INT8) measured to keep the most answers at plain
            static INT8's speed (README, "Choosing an INT8 method"; ``bench.bench_int8`` compares every method).
        qat: add the QAT stage and the int8-qat artifacts (minutes more; see the README's INT8 table).
        qat_epochs: QAT epochs (None: the ``qat:`` section's default).
        experiments, batch_size_ablation, warmup, repeats, threads: the ablation's plan (1 warm-up and 3
            timed runs of each batch: 90 timed batches per model and target; 2 and 5 took the demo to 11.7
            minutes on 2 cores, past its 10).
        use_virtual_device: start the virtual Android device and benchmark on it.
        use_cuda: add host-cuda when CUDA is present ("auto") or never ("off").
        quick: a label for the smallest settings (see :meth:`quick_config`).
        adb_key: private adb key for the phones in ``devices`` (None: ``~/.android/adbkey``; the virtual
            device always uses the demo's own key).
        runner: a local Android build of ExecuTorch's executor_runner to push to the phones in ``devices``
            (None: the one already at /data/local/tmp/executor_runner). How to run, not what: changing it
            does not redo a finished ablation.
    """

    out_dir: Path = Path("demo_out")
    devices: tuple[str, ...] = ()
    fresh: bool = False
    sample: SampleConfig = SampleConfig(custom_per_class=36)
    arch: str = "efficientnet_b0"
    image_size: int = 64
    epochs: int = 6
    batch_size: int = 32
    lr: float = 0.003
    max_steps_per_epoch: int | None = None
    min_test_accuracy: float = 0.40
    formats: tuple[str, ...] = ("torchscript", "executorch", "onnx")
    int8_modes: tuple[str, ...] = ("dynamic", "hybrid")
    qat: bool = False
    qat_epochs: int | None = None
    experiments: int = 30
    batch_size_ablation: int = 16
    warmup: int = 1
    repeats: int = 3
    threads: int | None = None
    use_virtual_device: bool = True
    use_cuda: str = "auto"
    quick: bool = False
    adb_key: Path | None = None
    runner: Path | None = None

    @staticmethod
    def quick_config(out_dir: Path = Path("demo_out"), **changes: Any) -> DemoConfig:
        """The smallest settings that still run every stage: tiny sample, tiny model, 4 experiments."""
        base = DemoConfig(
            out_dir=out_dir, quick=True,
            sample=SampleConfig(seed=0, rafdb_train_per_class=12, rafdb_test_per_class=4, fer_train_per_class=2,
                                fer_val_per_class=1, fer_test_per_class=1, custom_per_class=4),
            arch="test_efficientnet", image_size=48, epochs=1, batch_size=16, max_steps_per_epoch=3,
            min_test_accuracy=0.0, formats=("executorch",), int8_modes=("dynamic",), qat=True, qat_epochs=1,
            experiments=4, batch_size_ablation=4, warmup=1, repeats=2)
        return replace(base, **changes)

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """The settings a stage's result depends on (its marker must match them to be reused)."""
        sample = asdict(self.sample)
        train = {"sample": sample, "arch": self.arch, "image_size": self.image_size, "epochs": self.epochs,
                 "batch_size": self.batch_size, "lr": self.lr, "max_steps_per_epoch": self.max_steps_per_epoch}
        qat = {**train, "qat": self.qat, "qat_epochs": self.qat_epochs}
        export = {**qat, "formats": list(self.formats), "int8_modes": list(self.export_int8_modes)}
        ablation = {**export, "experiments": self.experiments, "batch_size": self.batch_size_ablation,
                    "warmup": self.warmup, "repeats": self.repeats, "threads": self.threads,
                    "devices": list(self.devices), "virtual": self.use_virtual_device, "cuda": self.use_cuda}
        by_stage: dict[str, dict[str, Any]] = {"data": {"sample": sample}, "train": train, "evaluate": train,
                                               "qat": qat, "export": export, "ablation": ablation,
                                               "report": ablation}
        return by_stage[stage]

    @property
    def export_int8_modes(self) -> tuple[str, ...]:
        """The INT8 modes the export stage asks for (``qat`` added when the QAT stage runs)."""
        return tuple(dict.fromkeys((*self.int8_modes, *(("qat",) if self.qat else ()))))


@dataclass(frozen=True)
class DemoEvent:
    """Progress for a display. ``kind``: stage-start, stage-done, stage-reused, note, progress, check."""

    kind: str
    stage: str
    message: str = ""
    done: int = 0
    total: int = 0
    seconds: float = 0.0
    ok: bool = True


@dataclass(frozen=True)
class DemoResult:
    """Where everything went, and the numbers the demo prints."""

    out_dir: Path
    checkpoint: Path
    manifest: Path
    db_path: Path
    run_id: str
    report_html: Path
    test_accuracy: float
    unseen_accuracy: float | None
    accuracy_ok: bool
    pretrained_note: str
    targets: tuple[str, ...]
    summary: tuple[tuple[str, str, str, str, str], ...]
    seconds_by_stage: Mapping[str, float] = field(default_factory=dict)
    reused: tuple[str, ...] = ()
    run_status: str = "complete"  # the ablation run's: "partial" when cells failed or a target stopped
    run_message: str = ""


EventCallback = Callable[[DemoEvent], None]


# --- stage bookkeeping ----------------------------------------------------------------------------


def _marker(out: Path, stage: str) -> Path:
    return out / stage / MARKER


def _finished(out: Path, stage: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stage's recorded result when it finished with these settings, else None."""
    path = _marker(out, stage)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("settings") != json.loads(json.dumps(settings)):
        return None
    return data.get("result")


def _mark(out: Path, stage: str, settings: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    atomic_write_json(_marker(out, stage), {"settings": settings, "result": result})


def _clear_from(out: Path, stage: str) -> None:
    """Invalidate ``stage`` and every later stage (their inputs are about to change)."""
    for later in STAGES[STAGES.index(stage):]:
        with contextlib.suppress(FileNotFoundError):
            _marker(out, later).unlink()


class _Stages:
    """Runs stages in order, reusing finished ones, timing each, and telling the display."""

    def __init__(self, cfg: DemoConfig, emit: EventCallback) -> None:
        self.cfg, self.emit = cfg, emit
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []

    def run(self, stage: str, fn: Callable[[], dict[str, Any]], describe: str) -> dict[str, Any]:
        settings = self.cfg.stage_settings(stage)
        out = self.cfg.out_dir
        if not self.cfg.fresh:
            found = _finished(out, stage, settings)
            if found is not None:
                self.reused.append(stage)
                self.seconds[stage] = 0.0
                self.emit(DemoEvent("stage-reused", stage, f"{describe}: reused ({_marker(out, stage)})"))
                return found
        _clear_from(out, stage)
        self.emit(DemoEvent("stage-start", stage, describe))
        start = time.perf_counter()
        result = fn()
        self.seconds[stage] = time.perf_counter() - start
        _mark(out, stage, settings, result)
        self.emit(DemoEvent("stage-done", stage, describe, seconds=self.seconds[stage]))
        return result


# --- the stages -----------------------------------------------------------------------------------


def _stage_data(cfg: DemoConfig) -> dict[str, Any]:
    from training.sample import generate_sample

    folder = cfg.out_dir / "data" / "sample"
    shutil.rmtree(folder, ignore_errors=True)
    roots = generate_sample(folder, cfg.sample)
    return {name: str(path.resolve()) for name, path in roots.items()}


def pretrained_weights_note(arch: str) -> tuple[bool, str]:
    """Whether timm's pretrained weights for ``arch`` are on this machine, and one line saying so."""
    from training import models

    finder = getattr(models, "cached_pretrained_weights", None) or getattr(models, "_cached_weights", None)
    try:
        found = finder(arch) if finder else None
    except Exception as exc:  # a broken cache is the same as no cache here: train from scratch
        log.debug("looking for cached weights of %s failed: %s", arch, exc)
        found = None
    if found is not None:
        return True, f"pretrained ImageNet weights for {arch} found locally ({found}): fine-tuning them"
    return False, (f"no pretrained weights for {arch} in timm's local cache: training from scratch "
                   "(run once with internet, or set pretrained_file, to start from ImageNet weights)")


def _stage_train(cfg: DemoConfig, data: Mapping[str, str], emit: EventCallback) -> dict[str, Any]:
    from training.config import load_config
    from training.train import train

    pretrained, note = pretrained_weights_note(cfg.arch)
    emit(DemoEvent("note", "train", note))
    run_root = cfg.out_dir / "train"
    shutil.rmtree(run_root / "phase2", ignore_errors=True)
    config = load_config(phase="phase2", overrides={
        "arch": cfg.arch, "pretrained": pretrained, "data_root": data["rafdb"], "image_size": cfg.image_size,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "max_steps_per_epoch": cfg.max_steps_per_epoch,
        "workers": 0, "out_dir": str(run_root), "run_name": "demo", "tensorboard": False, "mixup_alpha": 0.0,
        "early_stopping_patience": None, "device": "auto", "progress": True, "deterministic": False,
    })
    steps = {"n": 0}

    def on_step(epoch: int, step: int) -> None:
        steps["n"] += 1
        emit(DemoEvent("progress", "train", f"epoch {epoch + 1}/{cfg.epochs}", done=epoch + 1, total=cfg.epochs))

    result = train(config, on_step=on_step)
    return {"checkpoint": str(result.checkpoint_path.resolve()), "run_dir": str(result.run_dir.resolve()),
            "pretrained": pretrained, "note": note, "steps": steps["n"]}


def _stage_qat(cfg: DemoConfig, trained: Mapping[str, Any], emit: EventCallback) -> dict[str, Any]:
    """``emobench train qat`` from the demo's run: fake INT8, distilled from the FP32 model."""
    from training.qat_run import resolve_qat_config
    from training.train import train

    run_root = cfg.out_dir / "train"
    shutil.rmtree(run_root / "qat", ignore_errors=True)
    overrides: dict[str, Any] = {"out_dir": str(run_root), "run_name": "demo", "workers": 0, "tensorboard": False,
                                 "progress": True, "device": "auto"}
    if cfg.qat_epochs is not None:
        overrides["qat"] = {"epochs": cfg.qat_epochs}
    config = resolve_qat_config(trained["checkpoint"], overrides=overrides)

    def on_step(epoch: int, step: int) -> None:
        emit(DemoEvent("progress", "qat", f"epoch {epoch + 1}/{config.epochs}", done=epoch + 1, total=config.epochs))

    result = train(config, on_step=on_step)
    agreement = float(result.metrics["agreement"])
    emit(DemoEvent("note", "qat", f"QAT ({config.epochs} epoch(s)): top-1 agreement with the FP32 model on the seen "
                   f"test split {agreement:.1%} (fake-quantized; the INT8 artifacts are measured in the ablation)"))
    return {"checkpoint": str(result.checkpoint_path.resolve()), "run_dir": str(result.run_dir.resolve()),
            "agreement": agreement, "epochs": config.epochs}


def _stage_evaluate(cfg: DemoConfig, data: Mapping[str, str], trained: Mapping[str, Any],
                    emit: EventCallback) -> dict[str, Any]:
    from training.evaluate import evaluate_checkpoint

    folder = cfg.out_dir / "evaluate"
    seen = evaluate_checkpoint(trained["checkpoint"], data["rafdb"], split="test", out_dir=folder / "seen-test")
    unseen = evaluate_checkpoint(trained["checkpoint"], data["custom"], split="all", out_dir=folder / "unseen-custom")
    chance = 1 / NUM_CLASSES
    ok = seen["accuracy"] >= cfg.min_test_accuracy
    emit(DemoEvent("check", "evaluate", (
        f"seen test accuracy {seen['accuracy']:.1%} on {seen['num_samples']} images (chance {chance:.1%}, demo bar "
        f"{cfg.min_test_accuracy:.0%}); unseen custom photos {unseen['accuracy']:.1%}"), ok=ok))
    return {"test_accuracy": seen["accuracy"], "unseen_accuracy": unseen["accuracy"], "ok": ok,
            "folder": str(folder.resolve())}


def _stage_export(cfg: DemoConfig, data: Mapping[str, str], trained: Mapping[str, Any],
                  emit: EventCallback, qat: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from export.config import ExportConfig
    from export.pipeline import export_all

    folder = cfg.out_dir / "export"
    # jobs auto: the hybrid artifact's calibration and lowering take about as long as all the other artifacts
    # together, so two processes overlap them (demo model, 2 cores, 2026-12-07: 139-167 s in one process,
    # 82-90 s in two with hybrid handed out first)
    config = ExportConfig(formats=cfg.formats, precisions=("fp32", "int8"), int8_modes=cfg.export_int8_modes,
                          eval_data=Path(data["rafdb"]), eval_images=16 if cfg.quick else 32,
                          calibration_data=Path(data["rafdb"]), overwrite=True, jobs=None)
    state = {"done": 0, "total": 0}

    def on_event(event) -> None:
        if event.kind == "plan":
            state["total"] = event.total_steps
        elif event.kind == "done":
            state["done"] += 1
            emit(DemoEvent("progress", "export", f"{event.label} {'ok' if event.ok else 'FAILED: ' + event.message}",
                           done=state["done"], total=state["total"]))

    # a QAT checkpoint holds the FP32 model it started from (the FP32 artifacts) and the QAT graph
    checkpoint = qat["checkpoint"] if qat is not None else trained["checkpoint"]
    manifest = export_all(checkpoint, folder, config, on_event=on_event)
    for failure in getattr(manifest, "failures", ()):
        emit(DemoEvent("note", "export", f"export failed: {failure}", ok=False))
    from export.sensitivity_view import rounding_floor_line

    floor = rounding_floor_line(manifest)  # what rounding the weights alone costs: the calibrated modes measure it
    if floor:
        emit(DemoEvent("note", "export", floor))
    return {"manifest": str((folder / "manifest.json").resolve()),
            "artifacts": [a.label for a in manifest.artifacts]}


def _android_target(spec: str) -> str:
    spec = spec.strip()
    return spec if spec.startswith("android:") else f"android:{spec}"


def _stage_ablation(cfg: DemoConfig, data: Mapping[str, str], exported: Mapping[str, Any], stack: contextlib.ExitStack,
                    emit: EventCallback) -> dict[str, Any]:
    import torch

    from android_bench.ablation import RunOptions, run_ablation
    from android_bench.plan import PlanConfig, build_plan
    from device_results.store import ResultsStore

    targets = ["host-cpu"]
    if cfg.use_cuda == "auto" and torch.cuda.is_available():
        targets.append("host-cuda")
    connect = None
    if cfg.adb_key is not None:
        import functools

        from android_bench.device import connect as device_connect

        connect = functools.partial(device_connect, adb_key=cfg.adb_key)
    virtual_target = None
    if cfg.use_virtual_device:
        vd_address, connect = _start_virtual_device(cfg, stack, emit)
        virtual_target = f"android:{vd_address}"
        targets.append(virtual_target)
    targets.extend(_android_target(d) for d in cfg.devices)
    plan = build_plan(PlanConfig(
        manifest=Path(exported["manifest"]), seen=Path(data["rafdb"]), unseen=Path(data["custom"]),
        targets=tuple(dict.fromkeys(targets)), experiments=cfg.experiments, batch_size=cfg.batch_size_ablation,
        warmup=cfg.warmup, repeats=cfg.repeats, threads=cfg.threads, seed=0))
    emit(DemoEvent("note", "ablation", f"{len(plan.experiments)} experiments x {len(plan.models)} models on "
                   f"{', '.join(t.spec for t in plan.targets)}"))

    def progress(event) -> None:
        if event.kind == "experiment":
            emit(DemoEvent("progress", "ablation", event.target, done=event.done, total=event.total))
        elif event.kind == "target-start":
            emit(DemoEvent("note", "ablation", f"{event.target}: started"))
        elif event.kind == "retry":
            emit(DemoEvent("note", "ablation", f"{event.target}: {event.message or 'retrying'}", ok=False))

    db = cfg.out_dir / "ablation" / "results.db"
    with ResultsStore(db) as store:
        result = run_ablation(plan, store, RunOptions(log_root=cfg.out_dir / "ablation" / "runs", connect=connect,
                                                      runner=cfg.runner, label="demo"), progress=progress)
    if result.status != "complete":
        emit(DemoEvent("note", "ablation", f"run {result.run_id} ended {result.status}: {result.message}", ok=False))
    return {"db": str(db.resolve()), "run_id": result.run_id, "status": result.status, "message": result.message,
            "targets": [t.spec for t in plan.targets], "virtual_target": virtual_target}


def _start_virtual_device(cfg: DemoConfig, stack: contextlib.ExitStack, emit: EventCallback):
    """Start the virtual device with RSA auth like a phone, trusting a key of the demo's own."""
    from android_bench.device import connect as device_connect
    from android_bench.keys import ensure_adb_key
    from android_bench.virtual import VirtualDevice

    key = ensure_adb_key(cfg.out_dir / "ablation" / "adb" / "adbkey", create=True)
    root = cfg.out_dir / "ablation" / "virtual-device"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    vd = stack.enter_context(VirtualDevice(root, authorized_keys=Path(f"{key}.pub")))
    emit(DemoEvent("note", "ablation", f"virtual device (host CPU, labelled VIRTUAL) listening on {vd.address}"))
    stack.callback(emit, DemoEvent("note", "report", f"virtual device on {vd.address} stopped"))

    def connect(address: str):
        # the demo's own key for its virtual device; a real phone gets the user's ~/.android/adbkey
        return device_connect(address, adb_key=key if address == vd.address else cfg.adb_key)

    return vd.address, connect


def _stage_report(cfg: DemoConfig, ablation: Mapping[str, Any]) -> dict[str, Any]:
    from device_results.report import ReportConfig, write_report

    files = write_report(ablation["db"], [ablation["run_id"]], cfg.out_dir / "report" / "html",
                         ReportConfig(title="emobench demo report"))
    return {"html": str(files.html.resolve()), "markdown": str(files.markdown.resolve()),
            "warnings": len(files.data.warnings)}


def run_demo(cfg: DemoConfig, *, on_event: EventCallback | None = None) -> DemoResult:
    """Run (or reuse) every stage of the demo and return where things are.

    Raises:
        DemoError: a stage's result is unusable (e.g. the ablation produced no run).
        EmobenchError subclasses from the stages (bad data, export, device, store).
    """
    emit = on_event or (lambda _e: None)
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if cfg.fresh:
        for stage in STAGES:
            _clear_from(out, stage)
    stages = _Stages(cfg, emit)
    data = stages.run("data", lambda: _stage_data(cfg), "generate the sample dataset")
    trained = stages.run("train", lambda: _stage_train(cfg, data, emit),
                         f"train {cfg.arch} at {cfg.image_size} px for {cfg.epochs} epoch(s)")
    if "train" in stages.reused:
        emit(DemoEvent("note", "train", trained.get("note", "")))
    evaluated = stages.run("evaluate", lambda: _stage_evaluate(cfg, data, trained, emit),
                           "evaluate on the seen test split and the unseen custom photos")
    # the bar is not part of the evaluate stage's settings: judge a reused evaluation against today's bar
    accuracy_ok = float(evaluated["test_accuracy"]) >= cfg.min_test_accuracy
    if "evaluate" in stages.reused:
        emit(DemoEvent("check", "evaluate", f"seen test accuracy {evaluated['test_accuracy']:.1%} (chance "
                       f"{1 / NUM_CLASSES:.1%}, demo bar {cfg.min_test_accuracy:.0%})", ok=accuracy_ok))
    qat = stages.run("qat", lambda: _stage_qat(cfg, trained, emit),
                     "quantization-aware training from the trained model") if cfg.qat else None
    exported = stages.run("export", lambda: _stage_export(cfg, data, trained, emit, qat),
                          f"export {', '.join(cfg.formats)} x FP32/INT8 ({', '.join(cfg.export_int8_modes)})")
    with contextlib.ExitStack() as stack:
        ablation = stages.run("ablation", lambda: _stage_ablation(cfg, data, exported, stack, emit),
                              f"ablation: {cfg.experiments} experiments")
        reported = stages.run("report", lambda: _stage_report(cfg, ablation), "write the report")
    from device_results.report import ReportConfig, load_report_data, summary_rows
    from device_results.store import ResultsStore

    with ResultsStore(ablation["db"]) as store:
        data_view = load_report_data(store, [ablation["run_id"]], ReportConfig(bootstrap_resamples=200))
    return DemoResult(
        out_dir=out, checkpoint=Path(trained["checkpoint"]), manifest=Path(exported["manifest"]),
        db_path=Path(ablation["db"]), run_id=ablation["run_id"], report_html=Path(reported["html"]),
        test_accuracy=float(evaluated["test_accuracy"]), unseen_accuracy=evaluated.get("unseen_accuracy"),
        accuracy_ok=accuracy_ok, pretrained_note=str(trained.get("note", "")),
        targets=tuple(ablation["targets"]), summary=tuple(summary_rows(data_view)),
        seconds_by_stage=dict(stages.seconds), reused=tuple(stages.reused),
        run_status=str(ablation.get("status", "complete")), run_message=str(ablation.get("message", "")))
