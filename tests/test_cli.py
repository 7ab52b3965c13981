"""The root command: every command group is listed with one-line help; known errors are one line."""

from __future__ import annotations

from click.testing import CliRunner

from emobench import cli


def test_help_lists_command_groups():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for group in ("data", "demo"):
        assert f"  {group} " in result.output


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
