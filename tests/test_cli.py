"""The root command: every command group is listed with one-line help; known errors are one line."""

from __future__ import annotations

import click
from click.testing import CliRunner

from emobench import cli

# Every stage of the pipeline has its command; a registration lost in emobench.py fails here.
PIPELINE_COMMANDS = {"data", "train", "select", "evaluate", "export", "ablation", "latency", "device", "devices",
                     "results", "report", "demo"}
SUBCOMMANDS = {"data": {"sample", "info", "faces"}, "train": {"phase1", "phase2"}}


def _listed(help_text: str) -> dict[str, str]:
    """The 'Commands:' section of a --help page as {name: the start of its one-line help}."""
    section = help_text.split("Commands:\n", 1)[1]
    return {line.split()[0]: line.split(None, 1)[1] for line in section.splitlines() if line.startswith("  ")}


def test_help_lists_every_command_with_its_own_help():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = _listed(result.output)
    assert set(listed) == set(cli.commands) and PIPELINE_COMMANDS <= set(listed), sorted(listed)
    for name, text in listed.items():
        # click shortens the help to fit the line; what it shows is the start of the command's own
        assert cli.commands[name].get_short_help_str(limit=200).startswith(text.rstrip(".").rstrip()), (name, text)
    for group, names in SUBCOMMANDS.items():
        command = cli.commands[group]
        assert isinstance(command, click.Group) and names <= set(command.commands), (group, sorted(command.commands))
        assert set(_listed(CliRunner().invoke(cli, [group, "--help"]).output)) == set(command.commands)


def test_every_command_has_help_text():
    runner = CliRunner()
    for name, command in cli.commands.items():
        assert command.help, f"`emobench {name}` has no help text"
        assert runner.invoke(cli, [name, "--help"]).exit_code == 0


def test_known_error_is_one_line_with_hint(tmp_path):
    result = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "Error: dataset root" in result.output and "Hint:" in result.output
    assert "Traceback" not in result.output


def test_data_sample_writes_three_layouts(tmp_path):
    result = CliRunner().invoke(cli, ["data", "sample", "--out", str(tmp_path), "--scale", "0.05"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rafdb/basic/EmoLabel/list_patition_label.txt").is_file()
    assert (tmp_path / "fer2013/fer2013.csv").is_file()
    assert len(list((tmp_path / "custom/happy").glob("*.jpg"))) == 2
    info = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "rafdb"), "--json"])
    assert '"kind": "rafdb_basic"' in info.output


def test_processes_the_suite_starts_hear_ctrl_c():
    """Even when the suite itself was started with SIGINT ignored (a background job: conftest resets it)."""
    import subprocess
    import sys

    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"
