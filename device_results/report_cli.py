"""``emobench report``: tables, plots and one HTML page from stored runs."""

from __future__ import annotations

from pathlib import Path

import click

from emobench_common.names import DEFAULT_DB


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


def rich_console(*, stderr: bool = False):
    """A rich console; when the output is a file or a pipe, wide enough that table cells do not wrap."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _print_summary(data) -> None:
    from rich.table import Table

    from device_results.report import summary_rows

    console = rich_console()
    table = Table(title="per-image latency and accuracy", title_justify="left")
    for col in ("target", "model", "median ms/image", "p90 ms/image", "accuracy [95% CI]"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    for row in summary_rows(data):
        table.add_row(*row)
    console.print(table)
    for w in data.warnings:
        console.print(f"[bold yellow]{w.kind}[/]: {w.message}", highlight=False)


COMMANDS = [report]
