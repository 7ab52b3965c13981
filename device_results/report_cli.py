"""``emobench report`` (tables, plots and one HTML page from stored runs) and ``emobench demo`` (the whole mission)."""

from __future__ import annotations

from pathlib import Path

import click

from android_bench.ablation_cli import DEFAULT_DB


@click.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
              show_default=True, help="The results database the ablation wrote.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.html, report.md, the CSV tables and PNG plots.")
@click.option("--title", default="emobench report", show_default=True, help="Heading of the report.")
@click.option("--cv-threshold", type=float, default=0.15, show_default=True,
              help="Call out a model/target whose per-batch latency CV is above this.")
@click.option("--temp-rise", "temp_rise_c", type=float, default=5.0, show_default=True,
              help="Call out a target whose temperature rises by more than this many deg C during a run.")
def report(runs: tuple[str, ...], db_path: Path, out_dir: Path, title: str, cv_threshold: float,
           temp_rise_c: float) -> None:
    """Write the report of one or more runs (ids, unique prefixes or 'latest'); several runs side by side."""
    from device_results.report import ReportConfig, write_report

    files = write_report(db_path, runs, out_dir, ReportConfig(title=title, cv_threshold=cv_threshold,
                                                              temp_rise_c=temp_rise_c))
    _print_summary(files.data)
    click.echo(f"Report: {files.html}")
    click.echo(f"Tables: {files.markdown} and {len(files.csv)} CSV files in {files.out_dir}")


def _console(*, stderr: bool = False):
    """A rich console; when the output is a file or a pipe, wide enough that table cells do not wrap."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _print_summary(data) -> None:
    from rich.table import Table

    from device_results.report import summary_rows

    console = _console()
    table = Table(title="per-image latency and accuracy", title_justify="left")
    for col in ("target", "model", "median ms/image", "p90 ms/image", "accuracy [95% CI]"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    for row in summary_rows(data):
        table.add_row(*row)
    console.print(table)
    for w in data.warnings:
        console.print(f"[bold yellow]{w.kind}[/]: {w.message}", highlight=False)


class _DemoDisplay:
    """Stage lines on the console, and a transient progress bar while a stage reports progress."""

    def __init__(self) -> None:
        self.console = _console(stderr=True)
        self.progress = None
        self.task = None
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
            if self.progress is None:
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
def demo(out_dir: Path, devices: tuple[str, ...], fresh: bool, quick: bool, no_virtual_device: bool,
         adb_key: Path | None, runner: Path | None, min_accuracy: float | None) -> None:
    """Run the whole mission on the built-in sample: data, training, evaluation, export, ablation, report.

    Exits 1 (after printing the report's path) when the seen test accuracy is below the demo's bar.
    """
    from device_results.demo import DemoConfig, DemoError, run_demo

    changes = {"devices": devices, "fresh": fresh, "use_virtual_device": not no_virtual_device,
               "adb_key": adb_key, "runner": runner}
    if min_accuracy is not None:
        changes["min_test_accuracy"] = min_accuracy
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
    console = _console()
    console.print(table)
    chance = 1 / 7
    verdict = "clearly above chance" if result.accuracy_ok else "NOT above the demo's bar"
    console.print(f"Seen test accuracy {result.test_accuracy:.1%} (chance {chance:.1%}, bar "
                  f"{cfg.min_test_accuracy:.0%}): {verdict}", highlight=False)
    console.print(f"Total {sum(result.seconds_by_stage.values()):.0f} s"
                  + (f" (reused: {', '.join(result.reused)})" if result.reused else ""), highlight=False)
    click.echo(f"Report: {result.report_html}")
    if not result.accuracy_ok:
        raise DemoError(f"seen test accuracy {result.test_accuracy:.1%} is below the demo's bar "
                        f"{cfg.min_test_accuracy:.1%}",
                        hint="train longer (the full demo rather than --quick) or lower the bar with --min-accuracy")


COMMANDS = [report, demo]
