"""The app's commands, those that cross packages: ``emobench demo`` and ``emobench evaluate``.

``demo`` runs training, export, the ablation and the report in turn (:mod:`emobench_app.demo`);
``evaluate`` scores a checkpoint (training) or every artifact of an export manifest in its own
runtime (:mod:`emobench_app.evaluate_manifest`). Heavy imports stay inside the command bodies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from device_results.report_cli import rich_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data_root", type=click.Path(path_type=Path), required=True, help="Dataset root.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--kind", default="auto", show_default=True, help="Dataset layout; 'auto' detects it.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json and the PNGs here (default: <run folder>/eval-<split>).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--faces", is_flag=True,
              help="Crop each photo to its face first (EXIF-upright, most confident face; none found: used whole).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_cmd(checkpoint: Path, data_root: Path, split: str, kind: str, out_dir: Path | None, device: str,
                 batch_size: int, workers: int, faces: bool, as_json: bool) -> None:
    """Evaluate a checkpoint, a runs folder's latest, or every artifact of an export manifest.json."""
    from training.evaluate import evaluate_checkpoint
    from training.train import latest_checkpoint

    if checkpoint.suffix == ".json" or (checkpoint.is_dir() and (checkpoint / "manifest.json").is_file()):
        _evaluate_manifest(checkpoint if checkpoint.suffix == ".json" else checkpoint / "manifest.json",
                           data_root, split, kind, out_dir, as_json, faces=faces)
        return
    path = latest_checkpoint(checkpoint) if checkpoint.is_dir() else checkpoint
    out = out_dir or path.parent / f"eval-{split}"
    metrics = evaluate_checkpoint(path, data_root, split=split, kind=kind, out_dir=out, device=device,
                                  batch_size=batch_size, workers=workers, faces=faces)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(f"{metrics['arch']} on {data_root} [{metrics['split']}], {metrics['num_samples']} images: "
               f"accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}, "
               f"macro F1 {metrics['f1_macro']:.4f}")
    if "faces" in metrics:
        click.echo(f"  {metrics['faces']}")
    for name, m in metrics["per_class"].items():
        click.echo(f"  {name:9s} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  n={m['support']}")
    click.echo(f"wrote {out}/metrics.json, confusion_matrix.png, per_class.png")


def _evaluate_manifest(manifest: Path, data_root: Path, split: str, kind: str, out_dir: Path | None,
                       as_json: bool, *, faces: bool = False) -> None:
    from emobench_app.evaluate_manifest import evaluate_manifest

    out = out_dir or manifest.parent / f"eval-{split}"
    result = evaluate_manifest(manifest, data_root, split, out, kind=kind, faces=faces)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{manifest} on {data_root} [{split}], {result['images']} images:")
    if "faces" in result:
        click.echo(f"  {result['faces']}")
    for key, m in result["models"].items():
        if "error" in m:
            click.echo(f"  {key:40s} FAILED: {m['error']}")
        else:
            click.echo(f"  {key:40s} accuracy {m['accuracy']:.4f}  weighted F1 {m['f1_weighted']:.4f}  "
                       f"macro F1 {m['f1_macro']:.4f}")
    click.echo(f"wrote {out}/evaluation.json and one metrics_<model>.json per model")



class _DemoDisplay:
    """Stage lines on the console, and a transient progress bar while a stage reports progress."""

    def __init__(self) -> None:
        self.console = rich_console(stderr=True)
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.last_train = ""

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = self.task = None

    def __call__(self, event) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if event.kind == "progress":
            if event.stage == "train":
                # training draws its own bar on a terminal; elsewhere say when each epoch starts
                if not self.console.is_terminal and event.message != self.last_train:
                    self.last_train = event.message
                    self.console.print(f"  train: {event.message}", highlight=False)
                return
            if not self.console.is_terminal:  # a log file or a pipe: a line every fifth of the way
                step = max(1, event.total // 5)
                if event.done == event.total or event.done % step == 0:
                    self.console.print(f"  {event.stage}: {event.message} {event.done}/{event.total}", highlight=False)
                return
            if self.progress is None or self.task is None:
                self.progress = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TimeElapsedColumn(), console=self.console, transient=True)
                self.progress.start()
                self.task = self.progress.add_task(event.message, total=event.total or None)
            self.progress.update(self.task, completed=event.done, total=event.total or None,
                                 description=f"{event.stage}: {event.message}")
            return
        self._stop_bar()
        if event.kind == "stage-start":
            self.console.print(f"[bold cyan]>[/] {event.message} ...", highlight=False)
        elif event.kind == "stage-done":
            self.console.print(f"[green]done[/] {event.message} ({event.seconds:.1f} s)", highlight=False)
        elif event.kind == "stage-reused":
            self.console.print(f"[dim]reuse[/] {event.message}", highlight=False)
        elif event.kind == "check":
            mark = "[green]OK[/]" if event.ok else "[bold red]BELOW THE BAR[/]"
            self.console.print(f"  {mark} {event.message}", highlight=False)
        elif event.message:
            style = "" if event.ok else "[yellow]"
            self.console.print(f"  {style}{event.message}", highlight=False)

    def close(self) -> None:
        self._stop_bar()


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"),
              show_default=True, help="Folder for every demo output (re-runs reuse finished stages).")
@click.option("--device", "devices", multiple=True, metavar="TARGET",
              help="Also benchmark this phone: android:<serial> or android:<host:port> (repeatable).")
@click.option("--fresh", is_flag=True, help="Redo every stage instead of reusing finished ones.")
@click.option("--quick", is_flag=True, help="Smallest settings (tiny model and data, 4 experiments): a smoke test.")
@click.option("--no-virtual-device", is_flag=True, help="Do not start the virtual Android device.")
@click.option("--adb-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Private adb key for the --device phones (default ~/.android/adbkey).")
@click.option("--runner", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Android build of ExecuTorch's executor_runner to push to the --device phones.")
@click.option("--min-accuracy", type=click.FloatRange(0.0, None), default=None,
              help="The bar on the seen test accuracy, a fraction (default 0.40; 0 with --quick). "
                   "Below it the demo exits 1.")
@click.option("--qat/--no-qat", default=None,
              help="Also run quantization-aware training and benchmark its int8-qat artifacts (a few minutes more; "
                   "default: off, on with --quick).")
def demo(out_dir: Path, devices: tuple[str, ...], fresh: bool, quick: bool, no_virtual_device: bool,
         adb_key: Path | None, runner: Path | None, min_accuracy: float | None, qat: bool | None) -> None:
    """Run the whole mission on the built-in sample: data, training, evaluation, (QAT,) export, ablation, report.

    Exits 1 (after printing the report's path) when the ablation run is not complete (failed cells, a
    target that stopped) or the seen test accuracy is below the demo's bar.
    """
    from emobench_app.demo import DemoConfig, DemoError, run_demo

    changes: dict[str, Any] = {"devices": devices, "fresh": fresh, "use_virtual_device": not no_virtual_device,
                               "adb_key": adb_key, "runner": runner}
    if min_accuracy is not None:
        changes["min_test_accuracy"] = min_accuracy
    if qat is not None:
        changes["qat"] = qat
    cfg = DemoConfig.quick_config(out_dir, **changes) if quick else DemoConfig(out_dir=out_dir, **changes)
    display = _DemoDisplay()
    try:
        result = run_demo(cfg, on_event=display)
    finally:
        display.close()
    from rich.table import Table

    table = Table(title=f"emobench demo: run {result.run_id}", title_justify="left")
    for col in ("target", "model", "median ms/image", "p90 ms/image", "accuracy [95% CI]"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    for row in result.summary:
        table.add_row(*row)
    console = rich_console()
    console.print(table)
    chance = 1 / 7
    verdict = "clearly above chance" if result.accuracy_ok else "NOT above the demo's bar"
    console.print(f"Seen test accuracy {result.test_accuracy:.1%} (chance {chance:.1%}, bar "
                  f"{cfg.min_test_accuracy:.0%}): {verdict}", highlight=False)
    console.print(f"Total {sum(result.seconds_by_stage.values()):.0f} s"
                  + (f" (reused: {', '.join(result.reused)})" if result.reused else ""), highlight=False)
    click.echo(f"Report: {result.report_html}")
    if result.run_status != "complete":
        raise DemoError(f"the ablation run {result.run_id} ended {result.run_status}: {result.run_message[:500]}",
                        hint=f"the report shows what ran; redo the missing work with `emobench ablation --resume "
                             f"{result.run_id} --db {result.db_path}` once the cause is fixed")
    if not result.accuracy_ok:
        raise DemoError(f"seen test accuracy {result.test_accuracy:.1%} is below the demo's bar "
                        f"{cfg.min_test_accuracy:.1%}",
                        hint="train longer (the full demo rather than --quick) or lower the bar with --min-accuracy")


COMMANDS = [evaluate_cmd, demo]
