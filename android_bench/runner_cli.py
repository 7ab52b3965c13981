"""``emobench runner build``: a thin layer over android_bench.native.build_runner."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("runner")
def runner() -> None:
    """emobench's native executor_runner (C++, linked against the installed ExecuTorch)."""


@runner.command("build")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder for builds (default ~/.cache/emobench/runner).")
@click.option("--android-ndk", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Android NDK root: cross-compile for arm64-v8a (with --executorch-prefix).")
@click.option("--executorch-prefix", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Install prefix of an ExecuTorch built from source for Android.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Parallel compile jobs.")
def build(out_dir: Path | None, android_ndk: Path | None, executorch_prefix: Path | None, jobs: int | None) -> None:
    """Build the native runner (cached by ExecuTorch version, compiler and source); print its path last."""
    from android_bench.native import build_runner

    result = build_runner(out_dir, android_ndk=android_ndk, executorch_prefix=executorch_prefix, jobs=jobs)
    state = "cached" if result.cached else "built"
    tracer = "with the event tracer (--etdump_path works)" if result.event_tracer else "WITHOUT the event tracer"
    click.echo(f"{state}: {result.target}, ExecuTorch {result.executorch_version}, {result.compiler}, {tracer}",
               err=True)
    click.echo(f"sha256 {result.sha256}", err=True)
    click.echo(str(result.binary))


def format_profiles(records, top: int = 8) -> str:
    """Each (target, model): execute time, coverage and the slowest operators, as text."""
    lines = []
    for r in records:
        head = f"{r.target_id}  {r.model_key}  [{r.status}]  runner: {r.runner}"
        if r.status == "ok":
            head += (f"\n  Method::execute median {r.execute_median_ms:.3f} ms; operators account for "
                     f"{r.profiled_median_ms:.3f} ms ({r.coverage:.0%}) over {r.runs} runs")
        elif r.message:
            head += f"\n  {r.message}"
        lines.append(head)
        for o in r.operators[:top]:
            lines.append(f"    {o.share:6.1%}  {o.median_ms:9.3f} ms  x{o.calls:<3d} {o.operator}  ({o.kind}, "
                         f"{o.backend}{'' if o.delegated else ', not delegated'})")
    return "\n".join(lines)


@click.command("profile")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "targets", multiple=True, metavar="TARGET",
              help="host-cpu or android:SERIAL (repeatable; default host-cpu).")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Profiled executions.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Executions dropped first.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads.")
@click.option("--affinity", default=None, help="CPU mask for the device runner (taskset), e.g. f0.")
@click.option("--runner", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="executor_runner to push to Android targets (built with the event tracer for ETDumps).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results database (default: the ablation's).")
@click.option("--out", "out_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where ETDumps and logs go (default: profiles/ beside the database).")
@click.option("--adb-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Private adb key for Android targets (default ~/.android/adbkey).")
def profile(manifest: Path, targets: tuple[str, ...], runs: int, warmup: int, threads: int | None,
            affinity: str | None, runner: Path | None, db: Path | None, out_root: Path | None,
            adb_key: Path | None) -> None:
    """Per-operator profile of each ExecuTorch program (ETDump + Inspector), stored in the results database."""
    from android_bench.profiling import profile_manifest
    from device_results.store import ResultsStore
    from emobench_common.names import DEFAULT_DB

    connect = None
    if adb_key is not None:
        import functools

        from android_bench.device import connect as device_connect

        connect = functools.partial(device_connect, adb_key=adb_key)
    db = db or Path(DEFAULT_DB)
    with ResultsStore(db) as store:
        run_id, records = profile_manifest(manifest, targets or ("host-cpu",), store,
                                           out_root=out_root or db.parent / "profiles", runs=runs, warmup=warmup,
                                           threads=threads, affinity=affinity, runner=runner, connect=connect)
    click.echo(format_profiles(records))
    click.echo(f"\nprofile run {run_id} in {db}; report: emobench report {run_id}")


COMMANDS = [runner, profile]
