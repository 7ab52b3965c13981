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


COMMANDS = [runner]
