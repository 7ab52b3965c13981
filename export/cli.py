"""`emobench export`: a thin shell over ``export.pipeline.export_all`` with a progress display.

Heavy imports (torch, executorch, onnx) stay inside the command body so ``emobench --help`` is quick.
"""

from __future__ import annotations

from pathlib import Path

import click

from export.config import CALIBRATION_OBSERVERS


def _csv(allowed: tuple[str, ...]):
    def convert(ctx, param, value: str | None):
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in allowed]
        if bad:
            raise click.BadParameter(f"unknown value(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
        return items
    return convert


def _jobs(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: give a number >= 1 or auto")
    return int(value)


_MODE_WORDS = ("dynamic", "static", "hybrid", "mixed", "qat", "both", "all", "auto")


def _int8_modes(ctx, param, value: str) -> tuple[str, ...]:
    words = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [w for w in words if w not in _MODE_WORDS]
    if bad or not words:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {', '.join(_MODE_WORDS)}")
    return words


def _expand_int8_modes(words: tuple[str, ...], *, is_qat: bool) -> tuple[str, ...]:
    """The INT8 modes the ``--int8-mode`` words name, for a QAT checkpoint or not."""
    aliases = {"both": ("dynamic", "static"), "all": ("dynamic", "static", "hybrid", "mixed") + (("qat",) if is_qat else ()),
               "auto": ("dynamic",) + (("qat",) if is_qat else ())}
    return tuple(dict.fromkeys(m for w in words for m in aliases.get(w, (w,))))


@click.command("export")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Export folder (manifest.json + one file per artifact).")
@click.option("--latest", "latest_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Export the newest checkpoint of a runs folder (its 'latest' pointer) instead of CHECKPOINT.")
@click.option("--formats", default="torchscript,executorch,onnx", show_default=True,
              callback=_csv(("torchscript", "executorch", "onnx")), help="Comma-separated formats.")
@click.option("--precisions", default="fp32,int8", show_default=True, callback=_csv(("fp32", "int8")),
              help="Comma-separated precisions.")
@click.option("--int8-mode", "int8_mode", default="auto", show_default=True, callback=_int8_modes,
              help="Comma-separated INT8 modes: dynamic (activations quantized at run time), static (calibrated "
                   "activations), hybrid (dynamic, with the depthwise convs static: every layer INT8; ExecuTorch), "
                   "mixed (static with the most sensitive layer groups kept FP32), qat (from a "
                   "`emobench train qat` checkpoint); both = dynamic,static; all = every mode the checkpoint "
                   "allows; auto = dynamic, plus qat for a QAT checkpoint.")
@click.option("--calibration-data", type=click.Path(path_type=Path),
              help="Dataset root to calibrate static/hybrid/mixed INT8 on (its training split).")
@click.option("--calibration-images", type=int, default=None,
              help="Images for calibration (default: ExportConfig's, chosen by measurement; see docs/export.md).")
@click.option("--calibration-observer", type=click.Choice(list(CALIBRATION_OBSERVERS)), default=None,
              help="How static/hybrid/mixed INT8 picks activation ranges; auto (the default) tries every observer and "
                   "keeps the one whose INT8 model agrees best with FP32 on the calibration images.")
@click.option("--target-agreement", type=float, default=0.99, show_default=True,
              help="mixed: keep sensitive layer groups FP32 until top-1 agreement with FP32 on the calibration "
                   "images reaches this.")
@click.option("--sensitivity", is_flag=True,
              help="Rank layer groups by how much quantizing each alone changes the answers (always done for mixed).")
@click.option("--equalize-depthwise/--no-equalize-depthwise", default=True, show_default=True,
              help="hybrid: equalize the channels around each depthwise conv before calibrating (exact in FP32; "
                   "per-channel activation ranges emulated with FP32 multiplies).")
@click.option("--eval-data", type=click.Path(path_type=Path),
              help="Dataset root whose real images verify every artifact (default: --calibration-data, "
                   "then the data root recorded in the checkpoint).")
@click.option("--eval-images", type=int, default=32, show_default=True, help="Images for verification.")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Batch dimension the artifacts are exported with (1 = what a phone app runs).")
@click.option("--min-int8-agreement", type=float, default=0.9, show_default=True,
              help="Warn when an INT8 artifact's top-1 agreement with eager FP32 is below this.")
@click.option("--overwrite", is_flag=True, help="Replace a different export already in --out.")
@click.option("--jobs", default="1", show_default=True, callback=lambda c, p, v: _jobs(v),
              help="Worker processes exporting formats in parallel: N, or auto (one per core, up to one per "
                   "format); 1 = in this process.")
def export_command(checkpoint: Path | None, out_dir: Path, latest_dir: Path | None, formats, precisions,
                   int8_mode: tuple[str, ...], calibration_data: Path | None, calibration_images: int | None,
                   calibration_observer: str | None, target_agreement: float, sensitivity: bool,
                   equalize_depthwise: bool, eval_data: Path | None, eval_images: int, batch_size: int, min_int8_agreement: float,
                   overwrite: bool, jobs: int | None) -> None:
    """Export a checkpoint to TorchScript, ExecuTorch and ONNX (FP32 and INT8), each verified."""
    from export.config import ExportConfig
    from export.errors import ExportConfigError, ExportFailedError
    from export.pipeline import export_all, find_latest_checkpoint

    if (checkpoint is None) == (latest_dir is None):
        raise ExportConfigError("give either CHECKPOINT or --latest RUNS_DIR (exactly one)")
    if checkpoint is None:
        assert latest_dir is not None  # exactly one of the two, checked above
        checkpoint = find_latest_checkpoint(latest_dir)
        click.echo(f"latest checkpoint: {checkpoint}", err=True)
    from training.checkpoint import load_checkpoint

    is_qat = load_checkpoint(checkpoint).qat is not None
    modes = _expand_int8_modes(int8_mode, is_qat=is_qat)
    if "qat" in modes and not is_qat:
        raise ExportConfigError(f"--int8-mode qat: {checkpoint} is not a QAT checkpoint",
                                hint=f"make one with `emobench train qat --init-from {checkpoint}`, then export it")
    defaults = ExportConfig()
    config = ExportConfig(
        formats=formats, precisions=precisions, int8_modes=modes, batch_size=batch_size,
        calibration_data=calibration_data, eval_data=eval_data, eval_images=eval_images,
        int8_min_agreement=min_int8_agreement, overwrite=overwrite, target_agreement=target_agreement,
        sensitivity=sensitivity, equalize_depthwise=equalize_depthwise,
        calibration_images=defaults.calibration_images if calibration_images is None else calibration_images,
        calibration_observer=calibration_observer or defaults.calibration_observer, jobs=jobs,
    )
    with _Progress() as progress:
        manifest = export_all(checkpoint, out_dir, config, on_event=progress.on_event)
    _render(manifest)
    from export.sensitivity_view import render_sensitivity

    render_sensitivity(manifest)
    if manifest.failures:
        names = "; ".join(f"{f.format} {f.precision}{'-' + f.mode if f.mode else ''}: {f.error}"
                          for f in manifest.failures)
        raise ExportFailedError(f"{len(manifest.failures)} artifact(s) failed ({names}); the others are in "
                                f"{manifest.path}", hint="run with --debug -vv for the exporter's traceback")


class _Progress:
    """A rich progress bar over the export steps (ExecuTorch lowering takes tens of seconds each)."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=False)
        self._progress.__enter__()
        self._task = self._progress.add_task("loading checkpoint and images", total=None)
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def on_event(self, event) -> None:
        if event.kind == "plan":
            self._progress.update(self._task, total=event.total_steps, description="exporting")
        elif event.kind == "start":
            self._progress.update(self._task, description=f"exporting {event.label}")
        elif event.kind == "done":
            mark = "[green]ok[/]" if event.ok else f"[red]FAILED[/] {event.message[:120]}"
            self._progress.console.print(f"  {event.label}: {mark} ({event.seconds:.1f} s)")
            self._progress.advance(self._task)


def _render(manifest) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{manifest.arch} -> {manifest.folder}")
    table.add_column("artifact", no_wrap=True)
    for col in ("size MB", "top-1 agree", "max |diff|", "INT8 layers", "size/FP32"):
        table.add_column(col, justify="right")
    for a in manifest.artifacts:
        q = a.quantization
        table.add_row(
            a.label, f"{a.size_bytes / 1e6:.2f}",
            f"{100 * a.parity.top1_agreement:.1f}%" if a.parity else "-",
            f"{a.parity.max_abs_diff:.2e}" if a.parity else "-",
            f"{q.layers_quantized}/{q.layers_total}" if q else "-",
            f"{q.size_ratio_to_fp32:.2f}" if q and q.size_ratio_to_fp32 else "-",
        )
    for f in manifest.failures:
        table.add_row(f"[red]{f.format} {f.precision}{'-' + f.mode if f.mode else ''} FAILED[/]", "", "", "", "", "")
    Console().print(table)
    for s in manifest.skipped:
        click.echo(f"skipped {s.format} {s.precision}-{s.mode}: {s.reason}")
    for a in manifest.artifacts:
        click.echo(f"wrote {a.path}")
    click.echo(f"manifest: {manifest.path}")


COMMANDS = [export_command]
