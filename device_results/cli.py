"""`emobench results ...`: list, show, export and merge the runs in results databases."""

from __future__ import annotations

from pathlib import Path

import click

from emobench_common.names import DEFAULT_DB

_db_option = click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
                          show_default=True, help="Results database.")


def _open_existing(db: Path):
    from device_results.store import ResultsStore, StoreError

    if not db.is_file():
        raise StoreError(f"results database {db} does not exist", hint="run `emobench ablation` first, or pass --db")
    return ResultsStore(db)


@click.group("results")
def results() -> None:
    """List, show and export the runs in a results database."""


@results.command("list")
@_db_option
def results_list(db: Path) -> None:
    """One line per run: id, status, created, targets, models, experiments."""
    with _open_existing(db) as store:
        runs = store.list_runs()
        if not runs:
            click.echo(f"{db}: no runs yet")
        for run in runs:
            plan = run.plan
            targets = ",".join(t["spec"] for t in plan.get("targets", []))
            click.echo(f"{run.run_id}  {run.status:<10}  {run.created_at[:19]}  {len(plan.get('experiments', []))} "
                       f"experiments  {len(plan.get('models', []))} models  {targets}"
                       + (f"  [{run.label}]" if run.label else "")
                       + (f"  {run.status_message[:80]}" if run.status_message else ""))


@results.command("show")
@click.argument("run")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def results_show(run: str, db: Path, as_json: bool) -> None:
    """The summary tables of one run (RUN: id, unique prefix or 'latest')."""
    import json

    from device_results.summary import format_summary, summarize_run

    with _open_existing(db) as store:
        summary = summarize_run(store, store.resolve_run_id(run))
        click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else format_summary(summary))


@results.command("export")
@click.argument("run")
@_db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write into (default: results/export-<RUN>).")
def results_export(run: str, db: Path, fmt: str, out_dir: Path | None) -> None:
    """Every row of a run: one CSV per table, or one JSON file."""
    from device_results.export import export_run

    with _open_existing(db) as store:
        run_id = store.resolve_run_id(run)
        paths = export_run(store, run_id, out_dir or db.parent / f"export-{run_id}", fmt=fmt)
    for path in paths:
        click.echo(str(path))


@results.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--into", "into", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Database to merge into (created when absent; may already hold runs).")
@click.option("--source-host", "source_hosts", multiple=True,
              help="Host that produced each source, one per source in order (kept with each run).")
def results_merge(sources: tuple[Path, ...], into: Path, source_hosts: tuple[str, ...]) -> None:
    """Copy every run of SOURCES into one database; a run already there is skipped, a conflicting one refused."""
    from device_results.merge import merge_databases

    result = merge_databases(sources, into, source_hosts=source_hosts or None)
    for source in result.sources:
        click.echo(f"{source.source_db}: {len(source.runs_added)} run(s) added ({source.total_rows_added} rows), "
                   f"{len(source.runs_already_present)} already present")
    click.echo(f"{into}: {result.runs_added} run(s), {result.rows_added} rows added")


COMMANDS = [results]
