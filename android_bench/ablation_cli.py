"""``emobench ablation`` and ``emobench latency``: thin shells over the library."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from emobench_common.names import DEFAULT_DB

if TYPE_CHECKING:
    from rich.progress import TaskID

_path = click.Path(path_type=Path)
_existing = click.Path(exists=True, path_type=Path)
_KEY_OPTION = click.option("--adb-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Private adb key for Android targets (default ~/.android/adbkey).")

# The options that make up the plan (what is measured): with --resume they come from the stored run.
_PLAN_PARAMS = ("seen", "unseen", "targets", "experiments", "batch_size", "repeats", "warmup", "threads", "affinity",
                "cooldown_temp", "cooldown_timeout", "seed", "seen_split", "unseen_split", "models", "no_eager",
                "allow_reuse", "seen_kind", "unseen_kind", "faces")


def _connect_with(adb_key: Path | None):
    """A ``connect`` for RunOptions/measure_latency that uses ``adb_key`` (None: the default key)."""
    if adb_key is None:
        return None
    import functools

    from android_bench.device import connect

    return functools.partial(connect, adb_key=adb_key)


@click.command("ablation")
@click.option("--manifest", type=_existing, help="Export manifest (manifest.json or its folder).")
@click.option("--seen", type=_existing, help="Dataset seen in training (e.g. RAF-DB root).")
@click.option("--unseen", type=_existing, help="Dataset never seen in training (e.g. a custom photo folder).")
@click.option("--target", "targets", multiple=True,
              help="host-cpu, host-cuda, android:<serial or host:port> or android:all (every authorised device "
                   "the adb server lists) (repeatable; default host-cpu).")
@click.option("--experiments", default=30, show_default=True, help="Experiments (alternating seen/unseen).")
@click.option("--batch-size", default=16, show_default=True, help="Images per experiment.")
@click.option("--repeats", default=5, show_default=True, help="Timed runs of each model on each batch.")
@click.option("--warmup", default=3, show_default=True, help="Untimed runs before the timed ones.")
@click.option("--threads", type=int, default=None, help="CPU threads (--cpu_threads on a device).")
@click.option("--affinity", default=None, help="CPU affinity hex mask, e.g. f0 (taskset on a device).")
@click.option("--cooldown-temp", type=float, default=None, help="Wait before each experiment until below this C.")
@click.option("--cooldown-timeout", type=float, default=600.0, show_default=True, help="Longest cooldown wait (s).")
@click.option("--runner", type=_existing, default=None, help="Android build of ExecuTorch's executor_runner to push.")
@click.option("--runner-log", type=click.Choice(["auto", "stderr", "logcat"]), default="auto", show_default=True,
              help="Where the device runner logs its timings.")
@click.option("--runner-timeout", type=float, default=600.0, show_default=True, help="Seconds per runner call.")
@click.option("--db", type=_path, default=DEFAULT_DB, show_default=True, help="Results database.")
@click.option("--resume", "resume_run", default=None, help="Continue this run (id, prefix or 'latest').")
@click.option("--seed", default=0, show_default=True, help="Seed for image selection and model order.")
@click.option("--seen-split", default="test", show_default=True, help="Split of the seen dataset.")
@click.option("--unseen-split", default="all", show_default=True, help="Split of the unseen dataset.")
@click.option("--seen-kind", default="auto", show_default=True,
              help="Layout of the seen dataset ('auto' detects; rafdb_folder for RAF-DB sorted by emotion name).")
@click.option("--unseen-kind", default="auto", show_default=True, help="Layout of the unseen dataset.")
@click.option("--faces", is_flag=True,
              help="Crop the unseen photos to their face first (EXIF-upright, most confident face; none: used whole).")
@click.option("--model", "models", multiple=True, help="Only these model keys (repeatable).")
@click.option("--no-eager", is_flag=True, help="Leave out the eager FP32 model from the checkpoint.")
@click.option("--allow-reuse", is_flag=True, help="Reuse images once a dataset is exhausted.")
@click.option("--label", default="", help="Free-text label stored with the run.")
@click.option("--no-logits", is_flag=True, help="Do not store per-image logits.")
@click.option("--profile", is_flag=True,
              help="Then profile each .pte per operator on every target (ETDump + Inspector) into the same run.")
@click.option("--profile-runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Profiled executions per program with --profile.")
@_KEY_OPTION
@click.pass_context
def ablation(ctx, manifest, seen, unseen, targets, experiments, batch_size, repeats, warmup, threads, affinity,
             cooldown_temp, cooldown_timeout, runner, runner_log, runner_timeout, db, resume_run, seed, seen_split,
             unseen_split, seen_kind, unseen_kind, faces, models, no_eager, allow_reuse, label, no_logits,
             profile, profile_runs, adb_key) -> None:
    """Run the FP32-vs-INT8 ablation on every target, on the same images, into the results database.

    With --resume RUN the plan comes from the stored run: plan options (--target, --experiments, ...)
    are refused unless --manifest restates the whole plan, which must then equal the stored one.
    """
    from android_bench.ablation import ResumeError, RunOptions, resume_ablation, run_ablation
    from android_bench.fleet import expand_all_android
    from android_bench.plan import PlanConfig, PlanError, build_plan
    from device_results.store import ResultsStore
    from device_results.summary import format_summary, summarize_run

    if resume_run is not None and manifest is None:
        given = [p for p in _PLAN_PARAMS
                 if ctx.get_parameter_source(p) not in (None, click.core.ParameterSource.DEFAULT)]
        if given:
            opts = {o.name: o.opts[0] for o in ctx.command.params}
            names = ", ".join(opts[p] for p in given)
            raise ResumeError(f"--resume {resume_run} takes its plan from the stored run; {names} would be ignored",
                              hint="resume with only --resume RUN (and --db, --runner, --adb-key ...), or restate "
                                   "the whole plan with --manifest to have it checked against the stored one")
    options = RunOptions(runner=runner, log_form=runner_log, runner_timeout_s=runner_timeout,
                         store_logits=not no_logits, label=label, connect=_connect_with(adb_key))
    plan = None
    if manifest is not None:
        plan = build_plan(PlanConfig(
            manifest=manifest, seen=seen, unseen=unseen, targets=expand_all_android(targets) or ("host-cpu",),
            experiments=experiments, batch_size=batch_size, warmup=warmup, repeats=repeats, threads=threads,
            affinity=affinity, cooldown_temp_c=cooldown_temp, cooldown_timeout_s=cooldown_timeout, seed=seed,
            seen_split=seen_split, unseen_split=unseen_split, seen_kind=seen_kind, unseen_kind=unseen_kind,
            unseen_faces=faces, models=tuple(models) or None, include_eager=not no_eager, allow_reuse=allow_reuse))
    elif resume_run is None:
        raise PlanError("emobench ablation needs --manifest (or --resume RUN)",
                        hint="e.g. emobench ablation --manifest exports/x/manifest.json --seen DATA --unseen PHOTOS")
    with ResultsStore(db) as store, _Progress() as progress:
        if resume_run is not None:
            result = resume_ablation(store, resume_run, options, plan=plan, progress=progress)
        else:
            assert plan is not None
            click.echo(f"plan: {len(plan.experiments)} experiments x batch {plan.batch_size}, "
                       f"{len(plan.models)} models ({', '.join(m.key for m in plan.models)}), "
                       f"targets {', '.join(t.spec for t in plan.targets)}", err=True)
            result = run_ablation(plan, store, options, progress=progress)
        progress.stop()
        click.echo(format_summary(summarize_run(store, result.run_id)))
        click.echo(f"\nrun {result.run_id}: {result.status}; database {db}; raw logs {result.log_dir}")
        if profile:  # per-operator profiles into the same run (issue 13)
            from android_bench.plan import AblationPlan
            from android_bench.profiling import profile_run
            from android_bench.runner_cli import format_profiles

            run_plan = plan if plan is not None else AblationPlan.from_dict(store.get_run(result.run_id).plan)
            records = profile_run(store, result.run_id, run_plan, out_dir=Path(result.log_dir) / "profiles",
                                  runs=profile_runs, runner=runner, connect=options.connect)
            click.echo(format_profiles(records))
        if "|" in result.schedule or " then " in result.schedule:
            click.echo(f"schedule: {result.schedule}", err=True)
        if result.status == "partial":
            click.echo(f"partial: {result.message}", err=True)


class _Progress:
    """A rich progress bar per target, fed by the ablation's ProgressEvents (on stderr)."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._progress.start()
        self._tasks: dict[str, TaskID] = {}
        return self

    def __call__(self, event) -> None:
        if event.target not in self._tasks:
            self._tasks[event.target] = self._progress.add_task(event.target, total=event.total or None)
        task = self._tasks[event.target]
        if event.kind == "retry":
            self._progress.console.print(f"[yellow]{event.target}: {event.message}[/yellow]")
            return
        self._progress.update(task, completed=event.done, total=event.total or None)

    def stop(self) -> None:
        self._progress.stop()

    def __exit__(self, *exc) -> None:
        self._progress.stop()


@click.command("latency")
@click.argument("manifest", type=_existing)
@click.option("--target", "targets", multiple=True, help="host-cpu, host-cuda or android:<...> (repeatable).")
@click.option("--runs", default=30, show_default=True, help="Timed runs of each artifact.")
@click.option("--warmup", default=3, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=None, help="CPU threads (--cpu_threads on a device).")
@click.option("--affinity", default=None, help="CPU affinity hex mask (taskset on a device).")
@click.option("--runner", type=_existing, default=None, help="Android executor_runner to push.")
@click.option("--no-eager", is_flag=True, help="Leave out the eager FP32 model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_KEY_OPTION
def latency(manifest, targets, runs, warmup, threads, affinity, runner, no_eager, as_json, adb_key) -> None:
    """Quick latency table: each artifact N times on one input (avg/min/max/median/p90 ms, size MB)."""
    import json as _json

    from android_bench.latency import format_latency_table, measure_latency

    rows = measure_latency(manifest, tuple(targets) or ("host-cpu",), runs=runs, warmup=warmup, threads=threads,
                           affinity=affinity, runner=runner, include_eager=not no_eager,
                           connect=_connect_with(adb_key))
    if as_json:
        click.echo(_json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        click.echo(format_latency_table(rows))


COMMANDS = [ablation, latency]
