"""Write every row of a run as CSV (one file per table) or as one JSON document."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from device_results.store import TABLE_ORDER, ResultsStore
from emobench_common.fileio import atomic_write_text


def export_run(store: ResultsStore, run_id: str, out_dir: str | Path, *, fmt: str = "csv") -> list[Path]:
    """Export a run; returns the files written (atomically).

    CSV: ``run.csv`` (the run row, plan as JSON) and ``<table>.csv`` per table. JSON: ``<run_id>.json``.
    """
    out = Path(out_dir)
    dump = store.dump_run(run_id)
    if fmt == "json":
        return [atomic_write_text(out / f"{run_id}.json", json.dumps(dump, indent=2) + "\n")]
    if fmt != "csv":
        raise ValueError(f"format must be csv or json, got {fmt!r}")
    run = dict(dump["run"])
    run["plan"] = json.dumps(run["plan"], sort_keys=True)
    tables = {"run": [run], **{t: dump[t] for t in TABLE_ORDER}}
    paths = []
    for name, rows in tables.items():
        buf = io.StringIO()
        columns = list(rows[0]) if rows else (["run_id"] if name == "run" else store.table_columns(name))
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        paths.append(atomic_write_text(out / f"{name}.csv", buf.getvalue()))
    return paths

