"""Configs: packaged defaults, overrides, and clear errors for typos and bad values."""

from __future__ import annotations

import pytest

from training.config import ConfigError, TrainConfig, load_config, parse_overrides, save_config
from training.labels import EMOTIONS, PHASE1_CLASSES
from training.models import PHASE1_ARCHS


def test_phase2_defaults_are_the_original_final_run():
    c = load_config(phase="phase2")
    assert (c.arch, c.batch_size, c.epochs, c.lr, c.weight_decay, c.optimizer) == (
        "efficientnet_b0", 16, 30, 0.0005, 0.001, "adamw")
    assert c.scheduler == "cosine" and c.mixup_alpha > 0 and c.label_smoothing > 0
    assert c.grad_clip_norm and c.early_stopping_patience == 10 and c.workers >= 1
    assert c.classes == EMOTIONS


def test_phase1_lists_the_five_candidates_on_six_classes():
    c = load_config(phase="phase1")
    assert c.archs == PHASE1_ARCHS and c.classes == PHASE1_CLASSES


def test_overrides_are_typed_and_frozen(tmp_path):
    c = load_config(phase="phase2", overrides=["epochs=3", "classes=anger,happy", "grad_clip_norm=null", "lr=1e-3"])
    assert (c.epochs, c.classes, c.grad_clip_norm, c.lr) == (3, ("anger", "happy"), None, 0.001)
    with pytest.raises(AttributeError):
        c.epochs = 4  # type: ignore[misc]
    # Options the user did not give (None) never override the file.
    assert load_config(phase="phase2", overrides={"epochs": None}).epochs == 30
    saved = save_config(c, tmp_path / "config.yaml")
    assert load_config(saved) == c


def test_typo_in_an_override_names_the_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch'; did you mean 'epochs'"):
        parse_overrides(["epoch=3"])


def test_typo_in_a_yaml_file_names_file_line_and_match(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("arch: resnet50\nbatch_sise: 8\n")
    with pytest.raises(ConfigError, match=r"mine.yaml, line 2: unknown config key 'batch_sise'; did you mean 'batch_size'"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("epochs=abc", "epochs expects int"),
    ("lr=-1", "lr must be > 0"),
    ("optimizer=adamax", "optimizer='adamax' is not one of"),
    ("pretrained=maybe", "pretrained expects bool"),
])
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(phase="phase2", overrides=[override])


def test_replace_checks_like_overrides():
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        TrainConfig().replace(batch_size=0)


def test_cli_set_null_clears_a_field_and_absent_options_keep_the_file():
    """Regression: `--set early_stopping_patience=null` was dropped, so early stopping could not be
    switched off from the command line."""
    from click.testing import CliRunner

    from emobench import cli

    result = CliRunner().invoke(cli, ["train", "phase2", "--dry-run", "--set", "early_stopping_patience=null",
                                      "--set", "grad_clip_norm=null", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "early_stopping_patience: null" in result.output and "grad_clip_norm: null" in result.output
    assert "epochs: 3" in result.output and "lr: 0.0005" in result.output  # untouched file values stay
