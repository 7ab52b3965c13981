"""The training loop on the tiny sample: it learns, resumes bit for bit, and refuses bad input clearly."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner

from emobench import cli
from tests.training._helpers import tiny_config
from training.checkpoint import CheckpointError, load_checkpoint, load_checkpoint_dict
from training.datasets import CorruptImageError, DatasetLayoutError
from training.evaluate import evaluate_checkpoint
from training.models import PretrainedWeightsError, UnknownArchError, create_model
from training.train import TrainingError, TrainingPreempted, latest_checkpoint, train


def test_short_training_learns(tiny_sample, tmp_path):
    # 151 RAF-DB-layout training images (7 classes), test_efficientnet at 64 px, 15 epochs: ~5 s.
    config = tiny_config(tiny_sample["rafdb"], tmp_path, image_size=64, epochs=15, lr=0.01, batch_size=16,
                         augment=False, mixup_alpha=0.0, label_smoothing=0.0, limit_train_images=None,
                         limit_eval_images=None, tensorboard=True)
    result = train(config)
    # Chance is 1/7 = 0.143 on the 56 balanced test images; this run reaches ~0.5. The threshold 0.35
    # (20 of 56) is 2.4x chance: a model guessing at random reaches it with probability ~1e-5
    # (binomial tail), and it leaves room for float differences between CPUs.
    assert result.metrics["accuracy"] >= 0.35, result.metrics["accuracy"]
    assert result.metrics["num_samples"] == 56
    run = result.run_dir
    for name in ("config.yaml", "checkpoint.pt", "last.pt", "metrics.json", "confusion_matrix.png", "per_class.png"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert latest_checkpoint(tmp_path / "phase2") == result.checkpoint_path.resolve()
    assert latest_checkpoint(tmp_path) == result.checkpoint_path.resolve()
    # The checkpoint contract: weights_only-readable, everything export needs, and the history.
    raw = torch.load(result.checkpoint_path, weights_only=True)
    assert raw["arch"] == "test_efficientnet" and raw["input_size"] == [3, 64, 64]
    assert len(raw["history"]) == 15 and raw["config"]["epochs"] == 15 and raw["optimizer_state"]
    ckpt = load_checkpoint(result.checkpoint_path)
    assert ckpt.epoch == result.best_epoch
    # Evaluating the checkpoint again gives the same test metrics (the same weights and split).
    metrics = evaluate_checkpoint(result.checkpoint_path, tiny_sample["rafdb"], split="test", out_dir=tmp_path / "ev")
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert metrics["confusion_matrix"] == result.metrics["confusion_matrix"]
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()


def _weights(path):
    return load_checkpoint_dict(path)["model_state"]


@pytest.mark.parametrize("stop_at_step", [1, 2], ids=["mid-epoch", "epoch-end"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tiny_sample, tmp_path, stop_at_step):
    # Augmentation, mixup and dropout all draw random numbers: resume must restore every stream.
    common = dict(epochs=2, augment=True, mixup_alpha=0.4, drop_rate=0.3)
    full = train(tiny_config(tiny_sample["rafdb"], tmp_path / "a", **common))

    def preempt(epoch, step):  # Slurm's warning signal, delivered during epoch 1
        if epoch == 0 and step == stop_at_step:
            os.kill(os.getpid(), signal.SIGUSR1)

    config = tiny_config(tiny_sample["rafdb"], tmp_path / "b", run_name="job7", **common)
    with pytest.raises(TrainingPreempted) as info:
        train(config, on_step=preempt)
    assert info.value.exit_code == 75
    saved = load_checkpoint_dict(info.value.run_dir / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == ((0, 2) if stop_at_step == 1 else (1, 0))
    resumed = train(config.replace(resume="auto"))
    assert resumed.run_dir == info.value.run_dir
    a, b = _weights(full.run_dir / "last.pt"), _weights(resumed.run_dir / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert resumed.metrics["accuracy"] == full.metrics["accuracy"]


def test_init_from_rebuilds_the_head_for_more_classes(tiny_sample, tmp_path):
    phase1 = train(tiny_config(tiny_sample["fer2013"], tmp_path, phase="phase1", epochs=1,
                               classes=["anger", "fear", "happy", "sad", "surprise", "neutral"]))
    old = load_checkpoint(phase1.checkpoint_path)
    result = train(tiny_config(tiny_sample["rafdb"], tmp_path, epochs=1, lr=1e-12, mixup_alpha=0.0,
                               init_from=str(tmp_path / "phase1")))
    new = load_checkpoint(result.checkpoint_path)
    assert new.num_classes == 7 and old.num_classes == 6
    # The backbone came over (lr ~0 keeps it); the six shared classes keep their head rows.
    assert torch.allclose(new.model_state["conv_stem.weight"], old.model_state["conv_stem.weight"])
    assert torch.allclose(new.model_state["classifier.weight"][:6], old.model_state["classifier.weight"], atol=1e-6)


def test_init_from_another_arch_or_mismatched_classes_is_refused(tiny_sample, tmp_path):
    donor = train(tiny_config(tiny_sample["rafdb"], tmp_path, epochs=1))
    with pytest.raises(TrainingError, match=r"holds a test_efficientnet model but this run trains test_resnet"):
        train(tiny_config(tiny_sample["rafdb"], tmp_path, arch="test_resnet", init_from=str(donor.checkpoint_path)))
    with pytest.raises(TrainingError, match="has classes anger, fear, happy, sad, surprise, neutral, disgust but"):
        train(tiny_config(tiny_sample["rafdb"], tmp_path, init_from=str(donor.checkpoint_path),
                          classes=["disgust", "fear", "happy", "sad", "surprise", "neutral", "anger"]))
    # A file whose weights do not fit the class count it claims.
    raw = load_checkpoint_dict(donor.checkpoint_path)
    raw["num_classes"], raw["class_names"] = 6, raw["class_names"][:6]
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit test_efficientnet with 6 classes"):
        train(tiny_config(tiny_sample["rafdb"], tmp_path, init_from=str(tmp_path / "bad.pt")))


def test_bad_inputs_get_clear_errors(tiny_sample, tmp_path):
    with pytest.raises(UnknownArchError, match="unknown architecture 'efficientnet_bo'") as info:
        train(tiny_config(tiny_sample["rafdb"], tmp_path, arch="efficientnet_bo"))
    assert "efficientnet_b0" in info.value.hint
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError):
        train(tiny_config(tmp_path / "empty", tmp_path))
    assert not (tmp_path / "phase2").exists() or not any((tmp_path / "phase2").iterdir())


def test_corrupt_image_stops_training_unless_skip_bad(tiny_sample, tmp_path):
    import shutil

    root = tmp_path / "rafdb"
    shutil.copytree(tiny_sample["rafdb"], root)
    broken = sorted((root / "basic/Image/aligned").glob("train_*_aligned.jpg"))[5]
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = dict(limit_train_images=None, limit_eval_images=None, epochs=1)
    with pytest.raises(CorruptImageError, match=broken.name):
        train(tiny_config(root, tmp_path / "strict", **config))
    result = train(tiny_config(root, tmp_path / "lenient", skip_bad=True, **config))
    assert result.checkpoint_path.is_file()


def test_pretrained_weights_offline_fail_fast_with_a_way_forward(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(PretrainedWeightsError, match="HF_HUB_OFFLINE is set") as info:
        create_model("test_efficientnet", num_classes=7, pretrained=True)
    assert "--no-pretrained" in info.value.hint and "pretrained_file" in info.value.hint
    # A local weights file of the same architecture loads (the 1000-class head is replaced).
    torch.save(create_model("test_efficientnet", num_classes=1000).state_dict(), tmp_path / "w.pth")
    model = create_model("emotion_attention", num_classes=7, backbone="test_efficientnet",
                         pretrained_file=tmp_path / "w.pth")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(PretrainedWeightsError, match="does not fit test_resnet"):
        create_model("test_resnet", num_classes=7, pretrained_file=tmp_path / "w.pth")


def test_cli_train_evaluate_and_errors(tiny_sample, tmp_path):
    runner = CliRunner()
    args = ["train", "phase2", "--data", str(tiny_sample["rafdb"]), "--out", str(tmp_path), "--arch",
            "test_efficientnet", "--no-pretrained", "--epochs", "1", "--image-size", "32", "--workers", "0",
            "--limit-train-images", "14", "--set", "limit_eval_images=7", "--set", "tensorboard=false"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    out = runner.invoke(cli, ["evaluate", str(tmp_path / "phase2"), "--data", str(tiny_sample["custom"]),
                              "--split", "all", "--out", str(tmp_path / "ev"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["num_samples"] == 42
    bad = runner.invoke(cli, args + ["--set", "learning_rate=0.1"])
    assert bad.exit_code == 1 and "did you mean" in bad.output and "Traceback" not in bad.output
