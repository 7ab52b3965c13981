"""Commands of the training package: `emobench data|train|select` (`evaluate` is in emobench_app.cli).

Heavy imports stay inside command bodies so `emobench --help` is quick.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from training.config import TrainConfig


@click.group("data")
def data_group() -> None:
    """Generate the built-in sample dataset and inspect dataset folders."""


@data_group.command("sample")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write rafdb/, fer2013/ and custom/ into.")
@click.option("--seed", type=int, default=0, show_default=True, help="Every image is a function of the seed.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply every per-class count (0.1 for a tiny set, 2 for a bigger one).")
def data_sample(out_dir: Path, seed: int, scale: float) -> None:
    """Write the deterministic sample dataset (drawn faces) in the RAF-DB, FER-2013 and custom layouts."""
    from training.sample import SampleConfig, generate_sample

    base = SampleConfig()
    n = lambda v: max(2, round(v * scale))  # noqa: E731
    config = SampleConfig(
        seed=seed,
        rafdb_train_per_class=n(base.rafdb_train_per_class), rafdb_test_per_class=n(base.rafdb_test_per_class),
        fer_train_per_class=n(base.fer_train_per_class), fer_val_per_class=n(base.fer_val_per_class),
        fer_test_per_class=n(base.fer_test_per_class), custom_per_class=n(base.custom_per_class),
    )
    roots = generate_sample(out_dir, config)
    for name, root in roots.items():
        click.echo(f"{name:8s} {root}")


@data_group.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--kind", default="auto", show_default=True, help="Layout; 'auto' detects it.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--classes", default=None, help="Comma-separated task classes (default: all seven).")
@click.option("--skip-bad", is_flag=True, help="Skip and count bad rows and unreadable images instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def data_info(root: Path, kind: str, split: str, classes: str | None, skip_bad: bool, as_json: bool) -> None:
    """Read a dataset folder and print its layout and per-class counts."""
    from training.datasets import create_dataset

    ds = create_dataset(root, kind=kind, split=split, class_names=classes.split(",") if classes else None,
                        skip_bad=skip_bad, verify_images=skip_bad, allow_empty_classes=True)
    if as_json:
        click.echo(json.dumps({
            "kind": ds.kind, "layout_reason": ds.layout_reason, "root": str(ds.root), "split": ds.split,
            "images": len(ds), "class_counts": ds.class_counts(), "excluded": dict(ds.excluded),
            "skipped": ds.skipped, "not_data": dict(ds.junk),
        }, indent=2))
        return
    click.echo(f"{ds.kind} at {ds.root} [{ds.split}]: {len(ds)} images")
    click.echo(f"  layout: {ds.kind}, because {ds.layout_reason}")
    for name, count in ds.class_counts().items():
        click.echo(f"  {name:9s} {count:6d}")
    for name, count in sorted(ds.excluded.items()):
        click.echo(f"  ({name} excluded by the task: {count})")
    if ds.skipped:
        click.echo(f"  skipped as bad: {len(ds.skipped)}")
        for msg in ds.skipped[:10]:
            click.echo(f"    {msg}")
    if ds.junk:
        click.echo(f"  skipped as not data: {sum(ds.junk.values())} ("
                   + ", ".join(f"{k} {v}" for k, v in sorted(ds.junk.items())) + ")")


@data_group.command("faces")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the crops (same <emotion>/ layout) and faces.csv.")
@click.option("--margin", type=float, default=0.25, show_default=True,
              help="Context around the face box on each side, as a fraction of its side.")
@click.option("--size", type=int, default=None, help="Resize crops to SIZE x SIZE pixels (default: keep resolution).")
@click.option("--one-face", is_flag=True, help="Write no crop for a photo with several faces (reported in faces.csv).")
@click.option("--no-align", is_flag=True, help="Do not rotate crops to level the eyes.")
def data_faces(src: Path, out_dir: Path, margin: float, size: int | None, one_face: bool, no_align: bool) -> None:
    """Crop the face of every photo in a custom-layout folder (EXIF orientation applied) and write faces.csv."""
    from rich.progress import Progress

    from training.faces import FacesConfig, crop_faces, list_custom_images

    config = FacesConfig(margin=margin, size=size, one_face=one_face, align=not no_align)
    total = len(list_custom_images(src)[0])
    with Progress(transient=True) as progress:
        task = progress.add_task("finding faces", total=total)
        result = crop_faces(src, out_dir, config, on_image=lambda row: progress.advance(task))
    click.echo(result.summary())
    click.echo(f"wrote {result.csv_path}")


def _train_options(fn):
    """Options shared by `train phase1` and `train phase2`; those not given never override the config."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="YAML config (default: the packaged training/configs/<phase>.yaml)."),
        click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
                     help="Dataset root (FER-2013 csv/folders, RAF-DB, custom folders)."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Runs folder (runs go to <out>/<phase>/<run-name>-<arch>/)."),
        click.option("--arch", default=None, help="Model (timm name or emotion_attention_b0/_b2)."),
        click.option("--epochs", type=int, default=None),
        click.option("--batch-size", type=int, default=None),
        click.option("--lr", type=float, default=None),
        click.option("--image-size", type=int, default=None),
        click.option("--workers", type=int, default=None, help="Data-loader worker processes."),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:N."),
        click.option("--pretrained/--no-pretrained", default=None,
                     help="Start from timm's ImageNet weights (needs the network or timm's cache)."),
        click.option("--pretrained-file", default=None, help="Start from a local weights file instead."),
        click.option("--resume", is_flag=False, flag_value="auto", default=None,
                     help="Continue a run: alone, the run named by --run-name or the newest unfinished one; "
                          "or a run folder / last.pt."),
        click.option("--run-name", default=None, help="Run folder prefix (default: a timestamp)."),
        click.option("--max-steps-per-epoch", type=int, default=None, help="Cap the steps of every epoch."),
        click.option("--limit-train-images", type=int, default=None, help="Train on a stratified subset."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config field, e.g. --set mixup_alpha=0 (repeatable)."),
        click.option("--dry-run", is_flag=True, help="Print the resolved config and exit."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _resolve(phase: str, config_path, overrides, options) -> TrainConfig:
    from training.config import load_config, parse_overrides

    # options the user did not give are None and never override the file; `--set key=null` does
    explicit = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if v is not None}
    return load_config(config_path, {**explicit, **parse_overrides(overrides)}, keep_none=True,
                       phase=phase if config_path is None else None)


def _run_training(fn):
    """Show the training log at INFO, and turn a preemption into the requeue exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from training.train import TrainingPreempted

        logger = logging.getLogger("training")
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            return fn(*args, **kwargs)
        except TrainingPreempted as exc:
            click.secho(f"Preempted: {exc.message}", fg="yellow", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            raise SystemExit(exc.exit_code) from None

    return wrapper


def _echo_result(result) -> None:
    m = result.metrics
    click.echo(f"{m['arch']:24s} test accuracy {m['accuracy']:.4f}  macro F1 {m['f1_macro']:.4f}  "
               f"best epoch {result.best_epoch}  -> {result.checkpoint_path}")


@click.group("train")
def train_group() -> None:
    """Train models: Phase 1 selection (five architectures), Phase 2 fine-tuning, and QAT."""


@train_group.command("phase1")
@_train_options
@click.option("--only", default=None, help="Train one candidate, by index (a Slurm array task id) or name.")
@_run_training
def train_phase1_cmd(config_path, overrides, dry_run, only, **options) -> None:
    """Phase 1: train the candidate architectures in turn (or one, with --only) on FER-2013."""
    from training.train import phase1_archs, train_phase1

    config = _resolve("phase1", config_path, overrides, options)
    if dry_run:
        click.echo(_dump(config.replace(archs=tuple(phase1_archs(config, only)))))
        return
    for result in train_phase1(config, only=only):
        _echo_result(result)


@train_group.command("phase2")
@_train_options
@click.option("--init-from", default=None, help="Start from this checkpoint (or runs folder's latest), e.g. Phase 1's winner.")
@_run_training
def train_phase2_cmd(config_path, overrides, dry_run, **options) -> None:
    """Phase 2: fine-tune one model (EfficientNet-B0 by default) on RAF-DB's seven classes."""
    from training.train import train

    config = _resolve("phase2", config_path, overrides, options)
    if dry_run:
        click.echo(_dump(config))
        return
    _echo_result(train(config))


@train_group.command("qat")
@click.option("--init-from", required=True,
              help="The finished FP32 run to quantize: its checkpoint, run folder, or phase folder (its latest).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML whose keys override the FP32 run's config, e.g. its qat: section.")
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="Dataset root (default: the one the FP32 run trained on).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Runs folder (default: the FP32 run's; the run goes to <out>/qat/<run-name>-<arch>/).")
@click.option("--epochs", type=int, default=None, help="QAT epochs (qat.epochs).")
@click.option("--lr", type=float, default=None, help="QAT peak learning rate (qat.lr).")
@click.option("--batch-size", type=int, default=None)
@click.option("--workers", type=int, default=None, help="Data-loader worker processes.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N.")
@click.option("--resume", is_flag=False, flag_value="auto", default=None,
              help="Continue a QAT run: alone, the run named by --run-name or the newest unfinished one; "
                   "or a run folder / last.pt.")
@click.option("--run-name", default=None, help="Run folder prefix (default: a timestamp).")
@click.option("--max-steps-per-epoch", type=int, default=None, help="Cap the steps of every epoch.")
@click.option("--limit-train-images", type=int, default=None, help="Train on a stratified subset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set qat.distill_weight=0.5 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@_run_training
def train_qat_cmd(init_from, config_path, overrides, dry_run, epochs, lr, **options) -> None:
    """Quantization-aware training: fine-tune a finished FP32 run with fake INT8 (XNNPACK's QAT config),
    distilled from that FP32 model; `emobench export` of the QAT run adds an int8-qat artifact."""
    from training.config import merge_sections, parse_overrides
    from training.qat_run import resolve_qat_config
    from training.train import train

    explicit = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if v is not None}
    qat = {k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None}
    if qat:
        explicit["qat"] = qat
    config = resolve_qat_config(init_from, config_path=config_path,
                                overrides=merge_sections(explicit, parse_overrides(overrides)))
    if dry_run:
        click.echo(_dump(config))
        return
    result = train(config)
    _echo_result(result)
    agreement = result.metrics.get("agreement")
    if agreement is not None:
        click.echo(f"{'':24s} top-1 agreement with the FP32 model on the test split {agreement:.4f} "
                   f"(fake-quantized; export the run for the INT8 artifact)")


def _dump(config) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip()


@click.command("select")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--metric", default="accuracy", show_default=True,
              type=click.Choice(["accuracy", "f1_macro", "f1_weighted", "precision_weighted", "recall_weighted"]))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where selection.csv/.md/.png go (default: the runs folder given).")
def select_cmd(runs: tuple[Path, ...], metric: str, out_dir: Path | None) -> None:
    """Rank finished Phase 1 runs by a test metric; write CSV, Markdown and PNG; name the winner."""
    from training.select import select_best

    out = out_dir or (runs[0] if len(runs) == 1 and not (runs[0] / "metrics.json").exists() else runs[0].parent)
    selection = select_best(runs, metric=metric, out_dir=out)
    click.echo(selection.markdown_path.read_text().rstrip())
    click.echo(f"\nwrote {selection.csv_path}, {selection.markdown_path}, {selection.png_path}")


COMMANDS = [data_group, train_group, select_cmd]
