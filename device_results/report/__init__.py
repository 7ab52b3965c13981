"""Reports a person reads at a glance: Markdown and CSV tables, PNG plots, one self-contained HTML page.

``write_report(db_path, runs, out_dir)`` reads the runs from the results store
(``loading.load_report_data`` into the dataclasses of ``views``), lays the numbers out as tables (``tables``) and plots (``plots``) and
writes, into ``out_dir``:

- ``report.html``: the page (plots embedded as ``data:`` URIs, no network resources);
- ``report.md``: the same tables in Markdown, linking the PNG files;
- ``<table>.csv``: one file per table with raw full-precision values;
- ``*.png``: the plots;
- ``report.json``: which runs, which files, the warnings.

The folder is built in a private staging folder beside ``out_dir`` and moved into place at the
end, so a failure never leaves a half-written report behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device_results.report.devices import device_tables
from device_results.report.int8_methods import int8_method_table
from device_results.report.loading import load_report_data
from device_results.report.profiles import CHART_TITLE as PROFILE_CHART_TITLE
from device_results.report.profiles import load_profiles, profile_tables, write_profile_chart
from device_results.report.tables import build_tables, markdown_document, summary_rows, to_csv
from device_results.report.views import ReportConfig, ReportData
from emobench_common.errors import EmobenchError

__all__ = ["ReportConfig", "ReportData", "ReportError", "ReportFiles", "load_report_data", "summary_rows",
           "write_report", "write_report_from_data"]

log = logging.getLogger(__name__)


class ReportError(EmobenchError):
    """A report that cannot be written (bad output folder, no runs)."""


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote."""

    out_dir: Path
    html: Path
    markdown: Path
    csv: tuple[Path, ...]
    png: tuple[Path, ...]
    data: ReportData


def write_report(db_path: str | os.PathLike[str], runs: Sequence[str], out_dir: str | os.PathLike[str],
                 config: ReportConfig | None = None) -> ReportFiles:
    """Write the report of ``runs`` (ids, unique prefixes or ``latest``) from the database at ``db_path``.

    Raises:
        ReportError: no runs given, or the database file does not exist.
        RunNotFoundError: a run the database does not hold.
    """
    from device_results.store import ResultsStore

    if not runs:
        raise ReportError("no runs to report on", hint="name one or more run ids (or 'latest')")
    db = Path(db_path)
    if not db.is_file():
        raise ReportError(f"results database {db} does not exist",
                          hint="pass --db pointing at the file `emobench ablation` wrote")
    with ResultsStore(db) as store:
        data = load_report_data(store, runs, config)
    return write_report_from_data(data, out_dir)


def write_report_from_data(data: ReportData, out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Render ``data`` into ``out_dir`` (replacing an earlier report there)."""
    from device_results.report.html import render_html
    from device_results.report.plots import write_plots

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"report output {out} exists and is not a folder", hint="choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        raise ReportError(f"report output {out} is a non-empty folder that holds no emobench report",
                          hint="choose an empty or new folder for --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        profiles = load_profiles(data)  # "Where the time goes" (issue 13), when the runs were profiled
        tables = build_tables(data) + device_tables(data) + profile_tables(data, profiles)
        tables += [t for t in (int8_method_table(data),) if t.rows]
        plots = write_plots(data, stage)
        chart = write_profile_chart(data, profiles, stage)
        if chart is not None:
            plots.append((chart, PROFILE_CHART_TITLE))
        csv_files = []
        for t in tables:
            path = stage / f"{t.key}.csv"
            path.write_text(to_csv(t), encoding="utf-8")
            csv_files.append(path.name)
        generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        (stage / "report.md").write_text(markdown_document(data, tables, [(p.name, t) for p, t in plots]),
                                         encoding="utf-8")
        (stage / "report.html").write_text(render_html(data, tables, plots, generated), encoding="utf-8")
        (stage / "report.json").write_text(json.dumps({
            "runs": [r.run_id for r in data.runs], "db": data.db_path, "generated_at": generated,
            "csv": csv_files, "png": [p.name for p, _ in plots],
            "warnings": [{"kind": w.kind, "target": w.target, "message": w.message} for w in data.warnings],
        }, indent=2), encoding="utf-8")
        for p in stage.iterdir():
            p.chmod(0o644)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(stage, out)
        stage.chmod(0o755) if stage.exists() else out.chmod(0o755)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("report written to %s", out)
    return ReportFiles(out_dir=out, html=out / "report.html", markdown=out / "report.md",
                       csv=tuple(out / n for n in csv_files), png=tuple(out / p.name for p, _ in plots), data=data)
