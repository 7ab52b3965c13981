"""The ``emobench`` command: a root click group that only registers each package's commands.

Each package owns a ``cli`` module exposing ``COMMANDS`` (click commands or groups); the commands
that cross packages (``demo``, ``evaluate``) are the app layer's, in ``emobench_app.cli``. Those modules
keep heavy imports (torch, executorch) inside the command bodies so ``emobench --help`` is fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from emobench_common import quiet
from emobench_common.errors import EmobenchError

_COMMAND_MODULES = (
    "training.cli",
    "export.cli",
    "android_bench.cli",
    "android_bench.ablation_cli",
    "device_results.cli",
    "device_results.report_cli",
    "emobench_app.cli",
)


class _Root(click.Group):
    """Maps known errors to one line plus a hint and exit code 1; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EmobenchError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"Error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            ctx.exit(1)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks for known errors.")
@click.option("-v", "--verbose", count=True,
              help="More log output (-v info and third-party warnings, -vv debug).")
@click.version_option(package_name="emobench")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """emobench: train, export and benchmark facial-expression models on host and Android phones."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet.configure(verbose)  # -v also shows the third-party warnings and native log lines emobench hides


def _register() -> None:
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # package without commands yet
                continue
            raise
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="emobench")


if __name__ == "__main__":
    main()
