"""A fleet of devices: two virtual devices side by side, and merging two hosts' databases.

- two virtual devices pinned to disjoint cores (``--cpus``), single-threaded runner: the wall time of
  one ablation with both over the wall time of the same ablation with one alone; target <= 1.25
  (1.0 would be perfect overlap, 2.0 one after the other).
- ``results merge`` of two databases that each hold real 30-experiment runs: seconds, rows copied,
  and rows lost (target 0).

Full: EfficientNet-B0 at 112x112 (FP32 + dynamic INT8 ExecuTorch, batch 8), 30 experiments,
warm-up 1, repeats 3; the two configurations alternate (alone, both, alone, both, ...) after one
warm-up run each, median of the measured runs. Quick: timm's test_efficientnet at 64x64, 4 experiments.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_ablation import export_sample_model, make_sample
from bench.harness import BenchmarkError, Figure, main, ratio_figure


def _rows(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                  if r[0] != "run_origins" and "run_id" in {c[1] for c in conn.execute(f'PRAGMA table_info("{r[0]}")')}]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
    finally:
        conn.close()


def run(*, quick: bool) -> list[Figure]:
    from android_bench.ablation import RunOptions, run_ablation
    from android_bench.device import connect
    from android_bench.keys import ensure_adb_key
    from android_bench.plan import PlanConfig, build_plan
    from android_bench.virtual import VirtualDevice
    from device_results.merge import merge_databases
    from device_results.store import ResultsStore

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return [Figure.not_measured("ablation wall, two pinned virtual devices / one alone",
                                    reason="fewer than two CPUs", command="python -m bench --only bench_fleet",
                                    target="ratio <= 1.25")]
    measured = 1 if quick else 3
    arch, size, batch, experiments, warmup, repeats = (
        ("test_efficientnet", 64, 4, 4, 0, 1) if quick else ("efficientnet_b0", 112, 8, 30, 1, 3))
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        base = Path(tmp)
        sample = make_sample(base / "data")
        manifest = export_sample_model(base, sample, arch=arch, size=size, batch=batch)
        key = ensure_adb_key(base / "home" / ".android" / "adbkey", create=True)
        keys = Path(str(key) + ".pub")
        options = RunOptions(connect=lambda spec: connect(spec, adb_key=key))
        with VirtualDevice(base / "a", authorized_keys=keys, cpus={cpus[0]}) as vd_a, \
                VirtualDevice(base / "b", authorized_keys=keys, cpus={cpus[1]}) as vd_b:
            a, b = f"android:{vd_a.address}", f"android:{vd_b.address}"

            def plan(*targets: str):
                return build_plan(PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"],
                                             targets=targets, experiments=experiments, batch_size=batch,
                                             warmup=warmup, repeats=repeats, threads=1, include_eager=False))

            configs = {"alone": (plan(a), base / "alone.db"), "both": (plan(a, b), base / "both.db")}
            walls: dict[str, list[float]] = {"alone": [], "both": []}
            schedule = ""
            for attempt in range(1 + measured):  # the first round warms up (imports, first loads, runner build)
                for name, (p, db) in configs.items():
                    with ResultsStore(db) as store:
                        t0 = time.perf_counter()
                        result = run_ablation(p, store, options)
                        wall = time.perf_counter() - t0
                    if result.status != "complete":
                        raise BenchmarkError(f"the {name} ablation ended {result.status}: {result.message}")
                    if name == "both":
                        schedule = result.schedule
                        if "|" not in schedule:
                            raise BenchmarkError(f"the two devices did not run side by side: {schedule}")
                    if attempt:
                        walls[name].append(wall)
        alone, both = statistics.median(walls["alone"]), statistics.median(walls["both"])
        note = (f"{arch} {size}x{size}, {experiments} experiments x batch {batch}, warm-up {warmup}, repeats "
                f"{repeats}, --cpu_threads 1, devices pinned to CPU {cpus[0]} and CPU {cpus[1]} ({schedule}); "
                f"median of {measured} run(s) after one warm-up round"
                + ("; quick: a smoke run, no target" if quick else ""))
        spread = ("alone: " + ", ".join(f"{w:.2f}" for w in walls["alone"]) + " s; both: "
                  + ", ".join(f"{w:.2f}" for w in walls["both"]) + " s")
        figures = [ratio_figure("ablation wall, two pinned virtual devices / one alone", value=both, reference=alone,
                                unit="s", reference_label="the same ablation on one device alone",
                                target_max=None if quick else 1.25, spread=spread, note=note)]

        # merge the two databases (every run of each: real ablation runs of `experiments` experiments)
        into = base / "merged.db"
        sources = [configs["alone"][1], configs["both"][1]]
        before = [_rows(db) for db in sources]
        t0 = time.perf_counter()
        merged = merge_databases(sources, into, source_hosts=["host-a", "host-b"])
        merge_s = time.perf_counter() - t0
        after = _rows(into)
        expected = {t: sum(b.get(t, 0) for b in before) for t in set().union(*before)}
        lost = sum(max(0, expected[t] - after.get(t, 0)) for t in expected)
        total = sum(expected.values())
        again = merge_databases(sources, into)
        figures.append(Figure(
            name=f"results merge of two databases of {experiments}-experiment runs", value=merge_s, unit="s",
            reference=float(total), reference_label="rows in the two sources", target="0 rows lost",
            met=lost == 0 and merged.rows_added == total and again.rows_added == 0,
            spread=f"{merged.runs_added} runs, {merged.rows_added} rows copied, {lost} lost; merging again added "
                   f"{again.rows_added}",
            note=f"{total / merge_s:,.0f} rows/s; sources: {', '.join(f'{sum(b.values())} rows' for b in before)}"))
        return figures


if __name__ == "__main__":
    main(run)
